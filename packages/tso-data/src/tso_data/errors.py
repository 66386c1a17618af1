"""User-facing errors. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations


class TSODataError(Exception):
    """A problem the user can fix (bad input, unknown model, locked catalog...).

    The message must name the file, row and field where that applies, e.g.
    ``prompts.jsonl:12: field 'messages': expected a list``.
    """


class CatalogLockedError(TSODataError):
    """Another process holds the catalog's database file open for writing."""


def located(path: object, row: int | None, field: str | None, message: str) -> TSODataError:
    """Build an error that names file, row (1-based) and field.

    >>> str(located("a.jsonl", 3, "messages", "expected a list"))
    "a.jsonl:3: field 'messages': expected a list"
    >>> str(located("a.csv", None, None, "file not found"))
    'a.csv: file not found'
    """
    where = str(path)
    if row is not None:
        where += f":{row}"
    if field is not None:
        return TSODataError(f"{where}: field '{field}': {message}")
    return TSODataError(f"{where}: {message}")


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed: error messages
    print as one line.

    >>> one_line("Catalog Error: x\\nLINE 1: select")
    'Catalog Error: x LINE 1: select'
    """
    return " ".join(text.split())
