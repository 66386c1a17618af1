"""The import rules of docs/design.md, "2. Architecture", checked on the source text (AST), so a
violation fails here before it can matter at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "packages/tso-data/src/tso_data"
TRAIN = ROOT / "packages/tso-train/src/tso_train"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute or relative, anywhere in the file (lazy imports too)."""
    package = _package_of(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _package_of(path: Path) -> str:
    src = next(parent for parent in path.parents if parent.name == "src")
    return ".".join(path.relative_to(src).parts[:-1])


def sources(root: Path, *, skip: str | None = None) -> list[Path]:
    return [p for p in sorted(root.rglob("*.py")) if skip is None or skip not in p.relative_to(root).parts]


def offenders(files: list[Path], forbidden: str) -> list[str]:
    return [f"{p.relative_to(ROOT)} imports {m}" for p in files for m in sorted(imported_modules(p))
            if m == forbidden or m.startswith(forbidden + ".")]


def test_imports_are_read_with_their_package() -> None:
    """The checker itself finds a known import (sql_cmds uses ingest_cmds' catalog opener) and
    resolves a relative import against the file's package."""
    assert "tso_data.cli.ingest_cmds" in imported_modules(DATA / "cli" / "sql_cmds.py")
    assert _package_of(DATA / "pairs" / "run.py") == "tso_data.pairs"


def test_tso_train_never_imports_tso_data() -> None:
    assert offenders(sources(TRAIN), "tso_data") == []


@pytest.mark.parametrize("package", ["pairs"])
def test_pair_building_never_imports_generation(package: str) -> None:
    assert offenders(sources(DATA / package), "tso_data.generate") == []


def test_no_core_module_imports_a_cli_module() -> None:
    core_data = sources(DATA, skip="cli")
    core_train = [p for p in sources(TRAIN) if p.name != "cli.py"]
    assert offenders(core_data, "tso_data.cli") == []
    assert offenders(core_train, "tso_train.cli") == []
