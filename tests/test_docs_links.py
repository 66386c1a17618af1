"""Every relative link in the README and docs/ leads to a file that exists, and every #anchor to a
heading of that file (GitHub's heading ids), so moving or renaming a page cannot strand a reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").glob("*/README.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code removed."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, INLINE_CODE.sub("", line)))
    return lines


def heading_anchor(heading: str) -> str:
    """GitHub's id for a heading.

    >>> heading_anchor("round.toml reference")
    'roundtoml-reference'
    >>> heading_anchor("Training: `tso-train`")
    'training-tso-train'
    >>> heading_anchor("4. The snapshot contract")
    '4-the-snapshot-contract'
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"#{1,6} (.*)", line)
        if match:
            anchor = heading_anchor(match.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """'PAGE:LINE: TARGET: why' for each relative link of ``page`` that leads nowhere."""
    problems = []
    for number, line in _prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(root)}:{number}: {target}"
            if not resolved.exists():
                problems.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where}: no heading with that anchor in {resolved.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_checker_reports_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md#a-section) [self](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [bad anchor](other.md#no-such-section)\n"
        "```\n[inside code](missing-too.md)\n```\n`[inline](missing-three.md)`\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "page.md:3: missing.md: no such file",
        "page.md:3: other.md#no-such-section: no heading with that anchor in other.md",
    ]


def test_readme_stays_a_ten_minute_read() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
