"""A catalog is a directory holding one DuckDB file plus Parquet shards and snapshots::

    <catalog>/catalog.duckdb        tables of tso_data.schema (open it with duckdb or `tso-data sql`)
    <catalog>/shards/<table>/*.parquet  rows written by workers, not yet merged
    <catalog>/snapshots/round-<r>/<snapshot_id>.parquet
    <catalog>/round.toml            round configuration for `tso-data build`

DuckDB lets one read-write process lock out every other process, readers too. So the
database is opened for one transaction at a time (:meth:`Catalog.connect`) and closed
right after; a concurrent opener retries for ``lock_timeout_s`` and then fails clearly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from tso_data.errors import CatalogLockedError, TSODataError, one_line
from tso_data.schema import CATALOG_SCHEMA_VERSION, TABLES, create_statements, key_of

DB_FILE = "catalog.duckdb"
# Files readable by the stock `duckdb` CLI of the 1.5 line too (FACTS.md).
STORAGE_COMPATIBILITY = "v1.5.0"
HUMAN_SOURCE = "human"
LOCK_POLL_MAX_S = 0.1  # longest sleep between two tries to open a locked catalog
# tables newer than some catalogs, created by the first command that needs them
ON_DEMAND_TABLES = frozenset({"verdicts"})
GENERATION_KEY = "write_generation"  # meta row: committed write transactions (read_generation)
T = TypeVar("T")


class Catalog:
    def __init__(self, root: str | os.PathLike[str], lock_timeout_s: float = 10.0) -> None:
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s
        self._schema_checked = False  # every table present: checked on the first connection

    @property
    def db_path(self) -> Path:
        return self.root / DB_FILE

    def shards_dir(self, table: str) -> Path:
        return self.root / "shards" / table

    def snapshots_dir(self, round_: int) -> Path:
        return self.root / "snapshots" / f"round-{round_}"

    @property
    def round_config_path(self) -> Path:
        return self.root / "round.toml"

    def exists(self) -> bool:
        return self.db_path.is_file()

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def init(cls, root: str | os.PathLike[str]) -> Catalog:
        """Create the catalog directory and tables (idempotent)."""
        catalog = cls(root)
        if catalog.root.exists() and not catalog.root.is_dir():
            raise TSODataError(f"{catalog.root}: exists and is not a directory; choose another catalog path")
        try:
            catalog.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TSODataError(f"{catalog.root}: cannot create the catalog directory ({exc.strerror})") from None
        try:
            con = duckdb.connect(
                str(catalog.db_path), config={"storage_compatibility_version": STORAGE_COMPATIBILITY}
            )
        except duckdb.Error as exc:
            raise TSODataError(
                f"{catalog.db_path}: cannot open as a catalog database ({one_line(str(exc))}); "
                "nothing was changed: move the file away or choose another directory"
            ) from None
        try:
            con.execute("BEGIN")
            for stmt in create_statements():
                con.execute(stmt)
            con.execute(
                "INSERT INTO meta SELECT 'schema_version', ? WHERE NOT EXISTS "
                "(SELECT 1 FROM meta WHERE key = 'schema_version')",
                [CATALOG_SCHEMA_VERSION],
            )
            con.execute(
                "INSERT INTO models (name, kind, note, added_at) SELECT ?, 'human', "
                "'built-in source: human-written answers', now() WHERE NOT EXISTS "
                "(SELECT 1 FROM models WHERE name = ?)",
                [HUMAN_SOURCE, HUMAN_SOURCE],
            )
            con.execute("COMMIT")
        finally:
            con.close()
        return catalog

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> Catalog:
        """An existing catalog; a clear error if there is none."""
        catalog = cls(root)
        if not catalog.exists():
            raise TSODataError(
                f"{catalog.root}: no catalog here (missing {DB_FILE}); create one with "
                f"`tso-data init {catalog.root}`"
            )
        return catalog

    # -- connections -------------------------------------------------------------------

    @contextmanager
    def connect(self, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the database for the length of one ``with`` block.

        Read-write blocks run inside one transaction: committed on success, rolled back
        on any exception, so a failed ingest leaves the catalog exactly as it was.
        """
        con = self._open_with_retry(read_only)
        try:
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            if read_only:
                yield con
                return
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                bump_generation(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def retry_on_lock(self, open_: Callable[[], T]) -> T:
        """``open_()`` (a connect or an ATTACH of the database), retried while another
        process holds the lock, for up to ``lock_timeout_s``; then one clear error."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return open_()
            except duckdb.Error as exc:
                if not isinstance(exc, duckdb.IOException) or "lock" not in str(exc).lower():
                    raise TSODataError(
                        f"{self.db_path}: cannot open the catalog database: {one_line(str(exc))}"
                    ) from None
                if time.monotonic() >= deadline:
                    raise CatalogLockedError(
                        f"{self.db_path}: catalog is locked by another process "
                        f"(waited {self.lock_timeout_s:.0f} s); retry when it finishes"
                    ) from exc
                time.sleep(delay)
                # short polls: a large ingest frees the lock between its chunks for ~0.15 s
                delay = min(delay * 2, LOCK_POLL_MAX_S)

    def check_schema_once(self, con: duckdb.DuckDBPyConnection) -> None:
        """:func:`check_tables` on the first connection of this Catalog object."""
        if not self._schema_checked:
            check_tables(con, self.db_path)
            self._schema_checked = True

    def _open_with_retry(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        con = self.retry_on_lock(lambda: duckdb.connect(str(self.db_path), read_only=read_only))
        try:
            self.check_schema_once(con)
        except BaseException:
            con.close()
            raise
        return con

    # -- convenience reads ---------------------------------------------------------------

    def arrow(self, sql: str, params: list[object] | None = None) -> pa.Table:
        with self.connect(read_only=True) as con:
            return con.sql(sql, params=params or None).to_arrow_table()

    def scalar(self, sql: str, params: list[object] | None = None) -> object:
        with self.connect(read_only=True) as con:
            row = con.execute(sql, params or []).fetchone()
            return None if row is None else row[0]


def read_generation(con: duckdb.DuckDBPyConnection) -> int:
    """How many write transactions the catalog has committed through :meth:`Catalog.connect`
    (and staged writes): a writer that checked the catalog earlier compares it to know
    whether its checks still hold."""
    rows = con.execute("SELECT max(CAST(value AS BIGINT)) FROM meta WHERE key = ?", [GENERATION_KEY]).fetchall()
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def bump_generation(con: duckdb.DuckDBPyConnection) -> None:
    """Count one more committed write (inside the writer's transaction)."""
    con.execute(
        "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS VARCHAR) WHERE key = ?", [GENERATION_KEY]
    )
    if _changes(con) == 0:
        con.execute("INSERT INTO meta VALUES (?, '1')", [GENERATION_KEY])


def check_tables(con: duckdb.DuckDBPyConnection, db_path: Path) -> None:
    """Every table of the schema must be there: a table dropped by hand (``tso-data sql
    --write "DROP TABLE ..."``) is named, with the way back, instead of failing later
    inside some query."""
    present = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_catalog = current_database()"
    ).fetchall()}
    missing = [t for t in TABLES if t not in present and t not in ON_DEMAND_TABLES]
    if missing:
        raise TSODataError(
            f"{db_path}: table(s) {', '.join(missing)} missing (dropped?); the catalog cannot be used "
            f"as it is: `tso-data init {db_path.parent}` recreates them empty, or restore the file from a backup"
        )


def insert_new(con: duckdb.DuckDBPyConnection, table: str, source_sql: str) -> int:
    """Insert the rows of ``source_sql`` whose key is not yet in ``table``.

    ``source_sql`` must select the table's columns by name, without duplicate keys.
    Returns the number of rows inserted.
    """
    key = key_of(table)
    columns = table_columns(con, table)
    cols = ", ".join(columns)
    con.execute(
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM ({source_sql}) AS src "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.{key} = src.{key})"
    )
    return _changes(con)


def replace_rows(con: duckdb.DuckDBPyConnection, table: str, source_sql: str) -> int:
    """Upsert: rows of ``source_sql`` replace rows with the same key (judgment retries)."""
    key = key_of(table)
    columns = table_columns(con, table)
    cols = ", ".join(columns)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _replace_src AS SELECT {cols} FROM ({source_sql})")
    con.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM _replace_src)")
    con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _replace_src")
    n = _changes(con)
    con.execute("DROP TABLE _replace_src")
    return n


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The columns of catalog table ``table``, in order."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [r[0] for r in rows]


def _changes(con: duckdb.DuckDBPyConnection) -> int:
    row = con.fetchone()
    return int(row[0]) if row and row[0] is not None else 0
