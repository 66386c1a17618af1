"""Write to the catalog holding its write lock only for the final statements.

DuckDB lets one process open a database file read-write and then locks out every other
process, readers too. A large ingest spends most of its time reading the file, staging
rows and checking them against the catalog; done inside one read-write connection, that
kept readers (``tso-data sql``, ``status``) waiting for its whole length, past their
10 s patience. :class:`StagedWrite` splits it:

1. *stage*: an in-memory DuckDB connection with the catalog attached **read-only** (the
   lock readers share): every temp table and check runs here;
2. *write*: the catalog is re-attached read-write for the final INSERTs only, one
   transaction per DuckDB row group of rows (:func:`write_in_chunks`), the lock released
   for a moment in between. If another writer committed since the checks (the catalog's
   write generation moved, :func:`tso_data.catalog.read_generation`), that transaction is
   rolled back before writing anything and the checks run again with the catalog
   read-only, so nothing is checked against a stale catalog and readers are not kept
   waiting by the second round of checks either.

See docs/catalog.md (ingest) for the measurements behind the chunk size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import duckdb

from tso_data.catalog import Catalog, bump_generation, read_generation

ALIAS = "cat"


class StagedWrite:
    """``with StagedWrite(catalog) as staged:`` stage with ``staged.con``, then
    ``with staged.write() as changed:`` redo the checks if ``changed`` and write."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.con = duckdb.connect()
        self.generation = 0
        self.attached = False

    def __enter__(self) -> StagedWrite:
        try:
            for setting in ("autoinstall_known_extensions", "autoload_known_extensions", "enable_progress_bar"):
                self.con.execute(f"SET {setting} = false")
            self._attach(read_only=True)
            self.generation = read_generation(self.con)
        except BaseException:
            self.con.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()  # detaches the catalog: its lock goes with it

    @contextmanager
    def write(self) -> Iterator[bool]:
        """Re-attach the catalog read-write (waiting for the lock like any writer) and run
        the block in one transaction; yields whether another writer committed since the
        last check (:meth:`refresh`). Rolled back on any error."""
        self._detach()
        self._attach(read_only=False)
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield read_generation(self.con) != self.generation
            bump_generation(self.con)
            self.generation = read_generation(self.con)  # a next write() compares with this
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")
        self._detach()

    def refresh(self) -> None:
        """Attach the catalog read-only again, as it is now, for a new round of checks."""
        self._detach()
        self._attach(read_only=True)
        self.generation = read_generation(self.con)

    def _attach(self, read_only: bool) -> None:
        mode = "READ_ONLY" if read_only else "READ_WRITE"
        path = str(self.catalog.db_path).replace("'", "''")
        self.catalog.retry_on_lock(lambda: self.con.execute(f"ATTACH '{path}' AS {ALIAS} ({mode})").fetchall())
        self.attached = True
        self.con.execute(f"USE {ALIAS}")  # plain table names are the catalog's; TEMP tables stay in memory
        self.catalog.check_schema_once(self.con)

    def _detach(self) -> None:
        if self.attached:
            self.con.execute("USE memory")
            self.con.execute(f"DETACH {ALIAS}")
            self.attached = False


class ChunkedRows(Protocol):
    """Rows staged for writing, numbered 0..pending_rows-1."""

    pending_rows: int

    def write_rows(self, start: int, stop: int) -> int:
        """Insert rows start <= n < stop (inside the open write transaction); returns how many."""
        ...


R = TypeVar("R", bound=ChunkedRows)

ROW_GROUP = 122_880  # DuckDB's rows per row group
CHUNK_ROWS = ROW_GROUP  # rows per write transaction: one whole row group (see write_in_chunks)
PAUSE_S = 0.15  # the lock left free between chunks: readers retry every 0.1 s at most
STALE_TRIES = 3  # rounds of checks outside the lock before they run under it


class Stale(Exception):
    """Another writer committed since the checks: the transaction is rolled back unwritten."""


def write_in_chunks(staged: StagedWrite, rows: R, recheck: Callable[[], R]) -> tuple[R, int]:
    """Write ``rows`` in transactions of :data:`CHUNK_ROWS` rows, freeing the write lock for
    :data:`PAUSE_S` in between, so a reader never waits long behind a large ingest. If
    another writer committed since the last check, the chunk's transaction is given up
    before writing and ``recheck()`` stages the rows again with the catalog read-only, as
    it is now (those already written count as existing); after :data:`STALE_TRIES` such
    rounds (a writer committing all the time) the checks run under the lock instead, so the
    ingest ends. Returns the rows staged last and the number written. All checks run
    before a chunk is written; a crash between chunks leaves whole chunks, and the same
    ingest run again adds the rest.

    Why one row group: DuckDB compresses a full row group and writes it straight into the
    database file as the INSERT runs, so the COMMIT logs a pointer (kilobytes of WAL) and
    the checkpoint when the catalog is detached costs milliseconds; the lock is held about
    as long as compressing one row group takes. A smaller chunk goes through the WAL
    uncompressed and is compressed by that checkpoint instead, and every few such chunks
    the checkpoint merges the partial row groups they left, holding the lock for seconds.
    Several row groups in one transaction also left a checkpoint of seconds to the detach."""
    start, written, stale = 0, 0, 0
    while True:
        try:
            with staged.write() as changed:
                if changed and stale < STALE_TRIES:
                    raise Stale
                if changed:
                    rows, start = recheck(), 0
                stop = start + CHUNK_ROWS
                if rows.pending_rows:
                    written += rows.write_rows(start, stop)
        except Stale:
            stale += 1
            staged.refresh()
            rows, start = recheck(), 0
            continue
        start = stop
        if start >= rows.pending_rows:
            return rows, written
        time.sleep(PAUSE_S)
