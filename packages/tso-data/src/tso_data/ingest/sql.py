"""Small pieces of SQL text the ingest builds its statements from: quoted identifiers,
literals for constants, the columns of a staged table."""

from __future__ import annotations

import duckdb


def qi(name: str) -> str:
    """Quote an SQL identifier.

    >>> print(qi('a"b'))
    "a""b"
    """
    return '"' + name.replace('"', '""') + '"'


def literal(value: object) -> str:
    """An SQL literal for a constant.

    >>> literal("it's")
    "'it''s'"
    >>> literal(["a", "b"])
    "['a', 'b']"
    >>> literal(None)
    'NULL'
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def columns_of(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The columns of ``table`` (a staged temp table or view), in order."""
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
