"""List the source files over ~400 lines and the functions over ~60 lines (the project's size
rule, docs/design.md, 2. Architecture); exit status 1 when there is any.

    python scripts/sizes.py                      # both packages
    python scripts/sizes.py packages/tso-data    # one folder
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(root: Path) -> list[str]:
    """``FILE path lines`` and ``FUNC path:line name lines`` rows, in path order."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        if any(part.startswith(".") or part.endswith(".egg-info") for part in path.parts):
            continue
        text = path.read_text(encoding="utf-8")
        if (n := text.count("\n")) > MAX_FILE_LINES:
            rows.append(f"FILE {path} {n}")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    rows.append(f"FUNC {path}:{node.lineno} {node.name} {length}")
    return rows


def main(args: list[str]) -> int:
    roots = [Path(a) for a in args] or [Path("packages/tso-data/src"), Path("packages/tso-train/src")]
    rows = [row for root in roots for row in oversized(root)]
    print("\n".join(rows) if rows else "no file over 400 lines, no function over 60")
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
