"""Pairs → the snapshot file (docs/design.md, "4. The snapshot contract"): one Parquet file,
TRL conversational columns (:mod:`tso_data.pairs.conversations`) plus provenance, key-value
metadata, content-addressed and immutable. :data:`SNAPSHOT_SCHEMA` is the one definition of
its columns: the writer, the readers and the tests use it.

:func:`write_snapshot` is the fast writer (row groups built beside the single-threaded
Parquet writer); :func:`snapshot_table` + :func:`write_snapshot_file` write the same bytes
from one table, the plain version it is tested against.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tso_data.errors import TSODataError
from tso_data.ids import canonical_json, content_hash
from tso_data.pairs.conversations import PromptIndex, conversations
from tso_data.pairs.core import pair_ids
from tso_data.shards import publish

SCHEMA_VERSION = "1"
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
SNAPSHOT_SCHEMA = pa.schema([
    ("prompt", MESSAGES),
    ("chosen", MESSAGES),
    ("rejected", MESSAGES),
    ("pair_id", pa.string()),
    ("prompt_id", pa.string()),
    ("kind", pa.string()),
    ("chosen_source", pa.string()),
    ("rejected_source", pa.string()),
    ("chosen_score", pa.float64()),
    ("rejected_score", pa.float64()),
    ("round", pa.int32()),
])
# Pinned so that the same rows give the same bytes (no timestamps are written by pyarrow).
WRITER_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 1,  # higher levels cost time for files hardly smaller (benchmarks/bench_build.py)
    "use_dictionary": ["kind", "chosen_source", "rejected_source"],  # low-cardinality columns only
    # min/max where a reader can skip row groups by them (matrix pairs come before base
    # pairs); not on the texts or ids, where they cost write time and prune nothing
    "write_statistics": ["kind", "chosen_source", "rejected_source", "chosen_score", "rejected_score", "round"],
    "row_group_size": 65_536,
    "data_page_size": 1 << 20,
    "version": "2.6",
    # no ARROW:schema blob: the Parquet types read back as SNAPSHOT_SCHEMA, and readers then
    # see the footer's key-value metadata, tso.snapshot_id (added last) included, as the schema's
    "store_schema": False,
}


def with_pair_ids(conv: pl.DataFrame) -> pl.DataFrame:
    """Add pair_id (:func:`tso_data.pairs.core.pair_ids`) unless the pairs carry it."""
    if "pair_id" in conv.columns:
        return conv
    return conv.with_columns(pair_id=pair_ids(conv))


def snapshot_digest(conv: pl.DataFrame, config_json: str) -> str:
    """The snapshot id: a content hash of the configuration and every pair's identity and
    scores (texts are fixed by the answer ids inside pair_id).

    >>> df = pl.DataFrame({"pair_id": ["b", "a"], "chosen_score": [1.0, None], "rejected_score": [None, 0.5]})
    >>> snapshot_digest(df, "{}") == snapshot_digest(df.reverse(), "{}")
    True
    >>> mixed = pl.DataFrame({"pair_id": ["a!", "a", "a,"], "chosen_score": [1.0, 2.0, 3.0],
    ...                       "rejected_score": [None] * 3})
    >>> lines = chr(10).join(f"{p},{c}," for p, c in sorted(zip(["a!", "a", "a,"], [1.0, 2.0, 3.0])))  # by pair_id
    >>> by_definition = content_hash("snapshot", SCHEMA_VERSION, "{}", hashlib.sha256(lines.encode()).hexdigest())
    >>> snapshot_digest(mixed, "{}") == snapshot_digest(mixed.reverse(), "{}") == by_definition
    True
    """
    line = pl.concat_str(
        pl.col("pair_id"),
        pl.col("chosen_score").cast(pl.String).fill_null(""),
        pl.col("rejected_score").cast(pl.String).fill_null(""),
        separator=",",
    )
    # lines in pair_id order, whatever the order of the rows; with ids of one length (as
    # build_pairs makes them) that is the order of the lines themselves, a cheaper sort
    lengths = conv.select(pl.col("pair_id").str.len_bytes().min().alias("lo"),
                          pl.col("pair_id").str.len_bytes().max().alias("hi"))
    ordered = line.sort() if lengths["lo"].item() == lengths["hi"].item() else line.gather(pl.col("pair_id").arg_sort())
    lines = conv.select(ordered.str.join("\n")).item()
    digest = hashlib.sha256(lines.encode("utf-8")).hexdigest()
    return content_hash("snapshot", SCHEMA_VERSION, config_json, digest)


def _snapshot_frame(conv: pl.DataFrame, round_: int) -> pl.DataFrame:
    """The snapshot's columns, rows in the order given (the turns columns of the pairs are
    not written)."""
    frame = with_pair_ids(conv).select(
        "prompt", "chosen", "rejected", "pair_id", "prompt_id", "kind", "chosen_source", "rejected_source",
        "chosen_score", "rejected_score",
    )
    return frame.with_columns(pl.lit(round_, dtype=pl.Int32).alias("round"))


def _metadata(round_: int, config_json: str) -> dict[bytes, bytes]:
    """The key-value metadata known before the rows are written (the snapshot id, a digest
    of every row, is added to the file's footer when the last row group is written)."""
    return {
        b"tso.schema_version": SCHEMA_VERSION.encode(),
        b"tso.round": str(round_).encode(),
        b"tso.config": config_json.encode(),
    }


def snapshot_table(conv: pl.DataFrame, round_: int, config: dict[str, object]) -> tuple[pa.Table, str]:
    """The snapshot's Arrow table (rows in the order given, exact §4 schema, metadata) and its id."""
    frame = _snapshot_frame(conv, round_)
    config_json = canonical_json(config)
    with ThreadPoolExecutor(max_workers=1) as thread:  # the digest beside the Arrow conversion
        digest = thread.submit(snapshot_digest, frame.select("pair_id", "chosen_score", "rejected_score"), config_json)
        table = frame.to_arrow().cast(SNAPSHOT_SCHEMA)
        snapshot_id = digest.result()
    metadata = {**_metadata(round_, config_json), b"tso.snapshot_id": snapshot_id.encode()}
    return table.replace_schema_metadata(metadata), snapshot_id


def write_snapshot(
    pairs: pl.DataFrame, prompts: pl.DataFrame, round_: int, config: dict[str, object], directory: Path
) -> tuple[str, Path, bool, int]:
    """Pairs → the snapshot file ``directory/<id>.parquet``: the file that
    :func:`~tso_data.pairs.conversations.to_conversations`,
    :func:`snapshot_table` and :func:`write_snapshot_file` give (same bytes), pipelined.

    The Parquet writer is single-threaded and the largest part of the work, so it writes
    one row group while a second thread builds the next one's conversations and a third
    the snapshot id (a digest of every row) for the footer. Each chunk is one row group of the
    one-table write, so the bytes are the same.
    Returns (snapshot id, path, created, rows); never overwrites an existing file.
    """
    pairs = with_pair_ids(pairs)
    config_json = canonical_json(config)
    step = int(WRITER_OPTIONS["row_group_size"])  # type: ignore[call-overload]
    starts = range(0, pairs.height, step) if pairs.height else range(1)

    def arrow(index: PromptIndex, start: int) -> pa.Table:
        part = conversations(pairs.slice(start, step), index.slice(start, step))
        return _snapshot_frame(part, round_).to_arrow().cast(SNAPSHOT_SCHEMA)

    # one thread builds the chunks in order, another the id; this one writes
    with ThreadPoolExecutor(max_workers=1) as thread, ThreadPoolExecutor(max_workers=1) as digest_thread:
        index = thread.submit(PromptIndex.of, pairs, prompts)
        tables = [thread.submit(lambda start=start: arrow(index.result(), start)) for start in starts]
        scored = pairs.select("pair_id", "chosen_score", "rejected_score")

        def snapshot_id() -> str:
            index.result()  # first the index: the writer waits for it and the first chunk
            return snapshot_digest(scored, config_json)

        digest = digest_thread.submit(snapshot_id)
        schema = SNAPSHOT_SCHEMA.with_metadata(_metadata(round_, config_json))
        sid, path, created = _write_atomic(
            schema, (table.result() for table in tables), directory, digest.result,
            lambda sid: directory / f"{sid}.parquet"
        )
    return sid, path, created, pairs.height


def _write_atomic(
    schema: pa.Schema, tables: Iterable[pa.Table], directory: Path, snapshot_id: Callable[[], str],
    path_of: Callable[[str], Path],
) -> tuple[str, Path, bool]:
    """Write the row groups to a temporary file in ``directory``, put the schema's metadata
    and ``tso.snapshot_id`` in the footer and publish the file as ``path_of(id)`` (:func:`tso_data.shards.publish`)
    unless that file exists: a snapshot is never overwritten. Returns (id, path, created)."""
    options = {k: v for k, v in WRITER_OPTIONS.items() if k != "row_group_size"}
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a directory; move it away" if blocker else exc.strerror
        raise TSODataError(f"{directory}: cannot create the snapshot directory: {why}") from None
    tmp = directory / f".snapshot-{uuid.uuid4().hex}.parquet.tmp"
    try:
        with pq.ParquetWriter(tmp, schema, **options) as writer:  # type: ignore[arg-type]
            for table in tables:
                writer.write_table(table, row_group_size=WRITER_OPTIONS["row_group_size"])  # type: ignore[arg-type]
            sid = snapshot_id()
            writer.add_key_value_metadata({**(schema.metadata or {}), b"tso.snapshot_id": sid.encode()})
        path = path_of(sid)
        if is_intact(path, sid, tmp.stat().st_size):
            return sid, path, False
        publish(tmp, path)  # new, or in place of a damaged file of the same name
        return sid, path, True
    finally:
        if tmp.exists():
            tmp.unlink()


def is_intact(path: Path, snapshot_id: str, size: int) -> bool:
    """Whether ``path`` is the whole snapshot ``snapshot_id``: its size is the size the
    writer just produced (the bytes are deterministic) and its footer names the id. A
    truncated or foreign file is not, and is written again rather than reported as
    "already exists"."""
    try:
        if not path.is_file() or path.stat().st_size != size:
            return False
        return read_metadata(path).get("tso.snapshot_id") == snapshot_id
    except (OSError, pa.ArrowException):
        return False


def write_snapshot_file(table: pa.Table, path: Path) -> bool:
    """Write the table of :func:`snapshot_table` atomically as ``path``; never overwrite
    an intact snapshot. Returns False if it already existed."""
    metadata = dict(table.schema.metadata or {})
    sid = metadata.pop(b"tso.snapshot_id").decode()
    table = table.replace_schema_metadata(metadata)
    return _write_atomic(table.schema, [table], path.parent, lambda: sid, lambda _: path)[2]


def read_metadata(path: Path) -> dict[str, str]:
    """The snapshot's ``tso.*`` key-value metadata (from the file's footer)."""
    meta = pq.read_metadata(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"tso.")}
