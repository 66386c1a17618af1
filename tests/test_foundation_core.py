"""Core contracts every other module relies on: ids, catalog transactions, shards."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from tso_data import ids
from tso_data.catalog import Catalog, insert_new
from tso_data.errors import CatalogLockedError
from tso_data.shards import merge_shards, pending_shards, write_shard


def test_sql_hash_matches_python_hash() -> None:
    parts = ["abc", "model-x", '{"temperature":0.7}', "3"]
    expected = ids.content_hash("response", *parts)
    literals = [f"'{p}'" for p in parts]
    got = duckdb.sql(f"SELECT {ids.sql_hash('response', *literals)}").fetchall()[0][0]
    assert got == expected


def test_prompt_id_ignores_extra_keys_but_not_content() -> None:
    a = ids.prompt_id([{"role": "user", "content": "hi", "name": "n"}])
    assert a == ids.prompt_id([{"role": "user", "content": "hi"}])
    assert a != ids.prompt_id([{"role": "user", "content": "hi "}])


def test_failed_transaction_leaves_catalog_intact(catalog: Catalog) -> None:
    with pytest.raises(RuntimeError):
        with catalog.connect(read_only=False) as con:
            insert_new(con, "meta", "SELECT 'k' AS key, 'v' AS value")
            raise RuntimeError("boom")
    assert catalog.scalar("SELECT count(*) FROM meta WHERE key = 'k'") == 0


def test_locked_catalog_gives_clear_error(catalog: Catalog) -> None:
    import subprocess
    import sys
    import time

    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb,time; c=duckdb.connect({str(catalog.db_path)!r}); print('x', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline()
        impatient = Catalog(catalog.root, lock_timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(CatalogLockedError, match="locked by another process"):
            impatient.scalar("SELECT 1")
        assert time.monotonic() - start < 5
    finally:
        holder.kill()
        holder.wait()


def test_shard_merge_is_idempotent_and_cleans_up(catalog: Catalog) -> None:
    from datetime import datetime

    now = datetime(2024, 1, 1)
    rows = pa.table(
        {
            "failure_id": ["000000000000000a", "000000000000000b"],
            "task": ["generate"] * 2,
            "model": ["m"] * 2,
            "prompt_id": ["p1", "p2"],
            "error": ["e"] * 2,
            "attempts": pa.array([1, 1], pa.int32()),
            "created_at": [now, now],
        }
    )
    write_shard(catalog, "failures", rows)
    write_shard(catalog, "failures", rows.slice(0, 1))  # duplicate key in another shard
    assert merge_shards(catalog, "failures") == 2
    assert pending_shards(catalog, "failures") == []
    write_shard(catalog, "failures", rows)
    assert merge_shards(catalog, "failures") == 0
    assert catalog.scalar("SELECT count(*) FROM failures") == 2


def test_merge_removes_only_stale_temp_files(catalog: Catalog) -> None:
    import os
    import time

    directory = catalog.shards_dir("failures")
    directory.mkdir(parents=True)
    stale = directory / ".abc.parquet.1234.tmp"
    fresh = directory / ".def.parquet.5678.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    merge_shards(catalog, "failures")
    assert not stale.exists()
    assert fresh.exists()  # a writer may still be renaming it into place
