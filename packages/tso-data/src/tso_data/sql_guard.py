"""What a read-only `tso-data sql` query may do: read the catalog's tables and the files
inside the catalog directory, nothing else.

A read-only DuckDB connection still runs ``COPY ... TO``, ``EXPORT DATABASE`` and table
functions over any file. So a query without ``--write`` is checked twice:

- by statement: only queries (``SELECT``, ``DESCRIBE``/``SHOW``/``SUMMARIZE``, ``EXPLAIN``
  of a query, ``PRAGMA``) run; ``COPY``, ``EXPORT``, ``ATTACH``, ``SET``, ``LOAD`` ... are
  refused before anything runs;
- by DuckDB itself: external access is off except inside the catalog directory, and the
  configuration is locked so a query cannot switch it back on.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from tso_data.errors import TSODataError

_READ_ONLY_TYPES = {
    duckdb.StatementType.SELECT,  # also DESCRIBE, SHOW, SUMMARIZE, FROM-first queries
    duckdb.StatementType.PRAGMA,  # PRAGMA table_info(...) etc.; settings are locked
    duckdb.StatementType.EXPLAIN,  # checked below: EXPLAIN ANALYZE runs its statement
}
_EXPLAIN_RE = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+)?", re.IGNORECASE)


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise a one-line error unless every statement of ``query`` only reads.

    >>> con = duckdb.connect()
    >>> check_read_only(con, "SELECT 1; EXPLAIN SELECT 2")
    >>> check_read_only(con, "COPY (SELECT 1) TO 'x.parquet'")
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: sql: COPY needs --write (a query without it only reads the catalog; it writes no file)
    >>> check_read_only(con, "EXPLAIN ANALYZE COPY (SELECT 1) TO 'out.csv'")
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: sql: COPY needs --write (a query without it only reads the catalog; it writes no file)
    """
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise TSODataError(f"sql: {' '.join(str(exc).split())}") from None
    for statement in statements:
        kind = statement.type
        if kind == duckdb.StatementType.EXPLAIN:
            check_read_only(con, _EXPLAIN_RE.sub("", statement.query, count=1))
            continue
        if kind not in _READ_ONLY_TYPES:
            raise TSODataError(
                f"sql: {kind.name} needs --write (a query without it only reads the catalog; it writes no file)"
            )


def confine(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """Let ``con`` touch no file outside ``root`` (the catalog directory), and lock its
    configuration so no later statement can change that."""
    directory = str(root.resolve()).rstrip("/") + "/"
    con.execute("SET allowed_directories = ?", [[directory]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def check_filter(option: str, where: str) -> None:
    """A user's SQL condition (``--where``) must be one expression: not a way to append
    statements to the query it is placed in.

    >>> check_filter("--where", "category = 'math' AND n_turns = 1")
    >>> check_filter("--where", "true); COPY (SELECT 1) TO 'x.csv'; SELECT (1")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: --where "true); COPY (SELECT 1) TO 'x.csv'; SELECT (1": expected one SQL
    condition, not several statements
    """
    con = duckdb.connect()
    try:
        statements = con.extract_statements(f"SELECT 1 WHERE ({where})")
    except duckdb.Error as exc:
        raise TSODataError(f"{option} {where!r}: {' '.join(str(exc).split())}") from None
    finally:
        con.close()
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise TSODataError(f"{option} {where!r}: expected one SQL condition, not several statements")
