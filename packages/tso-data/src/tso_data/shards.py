"""Crash-safe hand-off from workers to the catalog.

Workers (generation, judging; possibly many processes on many machines) never hold the
database. They append rows to Parquet *shards* written atomically (temp file, fsync,
rename), and :func:`merge_shards` moves shard rows into the table in one transaction and
deletes the shard files only after the commit. A crash at any point leaves either an
unmerged shard (merged next time) or a merged shard not yet deleted (re-merging inserts
nothing new): the catalog stays consistent and at most the unflushed batch is lost.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tso_data.catalog import Catalog, insert_new, replace_rows, table_columns
from tso_data.schema import key_of
from tso_data.shard_rules import check_shard_rows


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without error the
    file is fsynced and renamed to ``path``, so readers see either nothing or the whole file.
    On an error the temporary file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        publish(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def publish(tmp: Path, path: Path) -> None:
    """Make the finished file ``tmp`` appear as ``path`` in one step, durably (fsync the
    file, rename, fsync the directory)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic_parquet(table: pa.Table, path: Path, **kwargs: object) -> None:
    """Write ``table`` to ``path`` so that readers see either nothing or the whole file."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def write_shard(catalog: Catalog, table_name: str, rows: pa.Table) -> Path | None:
    """Atomically write one shard of rows destined for ``table_name``; None if empty."""
    if rows.num_rows == 0:
        return None
    name = f"{int.from_bytes(os.urandom(4), 'big'):08x}-{uuid.uuid4().hex[:12]}.parquet"
    path = catalog.shards_dir(table_name) / name
    write_atomic_parquet(rows, path)
    return path


def pending_shards(catalog: Catalog, table_name: str) -> list[Path]:
    directory = catalog.shards_dir(table_name)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))


# A shard write takes seconds; a temp file this old belongs to a writer that was killed.
STALE_TEMP_AGE_S = 3600.0


def remove_stale_temp_files(directory: Path, older_than_s: float = STALE_TEMP_AGE_S) -> int:
    """Delete temp files left by writers killed mid-write; returns how many were removed."""
    if not directory.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for tmp in directory.glob(".*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # another merger removed it first
            continue
    return removed


def merge_shards(catalog: Catalog, table_name: str, replace: bool = False) -> int:
    """Merge every pending shard of ``table_name`` into the table; returns rows added.

    ``replace=False`` keeps existing rows (responses: first write wins);
    ``replace=True`` lets shard rows replace rows with the same key (judgment retries).
    Within the shards, the last-written row for a key wins.
    """
    remove_stale_temp_files(catalog.shards_dir(table_name))
    shards = pending_shards(catalog, table_name)
    if not shards:
        return 0
    key = key_of(table_name)
    staged = "_shard_rows"
    # filename ordering = write order is not guaranteed across machines; ties on key are
    # resolved by the newest created_at, then by file name, deterministically.
    source = (
        f"SELECT * EXCLUDE (filename, file_row_number) FROM {staged} "
        f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY created_at DESC, filename DESC) = 1"
    )
    with catalog.connect(read_only=False) as con:
        # the paths are a parameter: a catalog path may hold any character, quotes included
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {staged} AS SELECT * FROM read_parquet($files, "
            "union_by_name = true, filename = true, file_row_number = true)",
            {"files": [p.as_posix() for p in shards]},
        )
        check_shard_rows(con, staged, table_name, table_columns(con, table_name))
        added = replace_rows(con, table_name, source) if replace else insert_new(con, table_name, source)
        con.execute(f"DROP TABLE {staged}")
    for path in shards:
        path.unlink(missing_ok=True)
    return added
