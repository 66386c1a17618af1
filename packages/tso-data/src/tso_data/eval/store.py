"""The `verdicts` table: pairwise judge verdicts, written like judgments (atomic Parquet
shards merged with replace, so a retry's row replaces the failed one).

Catalogs made before the table existed get it on first use (``CREATE TABLE IF NOT
EXISTS``, the statement `tso-data init` runs); nothing else in them changes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from tso_data.catalog import Catalog
from tso_data.schema import TABLES
from tso_data.shards import merge_shards, write_shard

TABLE = "verdicts"
VERDICT_SCHEMA = pa.schema(
    [
        ("verdict_id", pa.string()),
        ("prompt_id", pa.string()),
        ("source_1", pa.string()),
        ("target_1", pa.string()),
        ("source_2", pa.string()),
        ("target_2", pa.string()),
        ("judge", pa.string()),
        ("judge_version", pa.string()),
        ("rubric", pa.string()),
        ("rubric_version", pa.string()),
        ("shown_first", pa.int16()),
        ("sample_index", pa.int32()),
        ("raw_text", pa.string()),
        ("preference", pa.float64()),
        ("status", pa.string()),
        ("attempts", pa.int32()),
        ("created_at", pa.timestamp("us")),
    ]
)


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    # fetchall, not fetchone: a half-read result keeps the connection busy (duckdb 2.0)
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchall()[0][0])


def create_verdicts_table(con: duckdb.DuckDBPyConnection) -> None:
    """Inside an open read-write transaction: add the table if this catalog predates it."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({TABLES[TABLE][1]})")


def ensure_verdicts_table(catalog: Catalog) -> None:
    with catalog.connect(read_only=True) as con:
        if has_table(con, TABLE):
            return
    with catalog.connect(read_only=False) as con:
        create_verdicts_table(con)


def write_verdicts(catalog: Catalog, rows: list[dict[str, object]]) -> None:
    """One atomic shard of verdict rows (merged by :func:`merge_verdicts`)."""
    if rows:
        write_shard(catalog, TABLE, pa.Table.from_pylist(rows, schema=VERDICT_SCHEMA))


def merge_verdicts(catalog: Catalog) -> int:
    ensure_verdicts_table(catalog)
    return merge_shards(catalog, TABLE, replace=True)
