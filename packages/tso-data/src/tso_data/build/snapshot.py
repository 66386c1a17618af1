"""Pairs → the snapshot file of DESIGN.md §4: one Parquet file, TRL conversational columns
plus provenance, key-value metadata, content-addressed and immutable.

Multi-turn prompts (k user turns answered turn by turn): ``prompt`` holds every message up
to and including the first answered user turn (system messages stay there); ``chosen`` and
``rejected`` hold that answer's continuation [assistant_1, user_2, assistant_2, …,
assistant_k], so the trainer scores the whole conversation and masks the user tokens.
Single-turn: ``chosen`` = [assistant].
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tso_data.build.pairs import pair_ids
from tso_data.ids import canonical_json, content_hash
from tso_data.shards import atomic_path, write_atomic_parquet

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
    "compression_level": 1,  # level 3 costs 15 % more time for a file no smaller
    "use_dictionary": ["kind", "chosen_source", "rejected_source"],  # low-cardinality columns only
    "write_statistics": True,
    "row_group_size": 65_536,
    "data_page_size": 1 << 20,
    "version": "2.6",
}


def split_conversation(messages: list[dict[str, str]], n_turns: int, turns: list[str]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(prompt, continuation) for an answer ``turns`` to the last ``n_turns`` user messages.

    >>> msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
    ...         {"role": "user", "content": "And?"}]
    >>> prompt, cont = split_conversation(msgs, 2, ["Hello", "Bye"])
    >>> [m["role"] for m in prompt], [(m["role"], m["content"]) for m in cont]
    (['system', 'user'], [('assistant', 'Hello'), ('user', 'And?'), ('assistant', 'Bye')])
    >>> split_conversation([{"role": "user", "content": "Q"}], 1, ["A"])[1]
    [{'role': 'assistant', 'content': 'A'}]
    """
    user_idx = [i for i, m in enumerate(messages) if m["role"] == "user"]
    answered = user_idx[len(user_idx) - n_turns:]
    first = answered[0]
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[: first + 1]]
    continuation: list[dict[str, str]] = []
    for k, start in enumerate(answered):
        if k > 0:
            continuation.extend(
                {"role": m["role"], "content": m["content"]} for m in messages[answered[k - 1] + 1 : start + 1]
            )
        continuation.append({"role": "assistant", "content": turns[k]})
    return prompt, continuation


def to_conversations(pairs: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
    """Add ``prompt``, ``chosen``, ``rejected`` message lists to the pairs of
    :func:`tso_data.build.pairs.build_pairs` (vectorised for single-turn prompts)."""
    # join on the slim key, then gather the messages (moving list columns through a join is slow)
    index = prompts.select("prompt_id", pl.col("n_turns").cast(pl.Int64)).with_row_index("_pi")
    joined = pairs.join(index, on="prompt_id", how="left", maintain_order="left")
    messages = prompts.get_column("messages")
    if messages.n_chunks() > 1:
        messages = messages.rechunk()
    joined = joined.with_columns(messages=messages.gather(joined["_pi"])).drop("_pi")
    single = joined.filter(pl.col("n_turns") == 1)

    def assistant(col: str) -> pl.Expr:
        return pl.concat_list(
            pl.struct(pl.lit("assistant").alias("role"), pl.col(col).list.first().alias("content"))
        )

    single = single.with_columns(
        prompt=pl.col("messages").list.eval(pl.struct(pl.element().struct.field("role"), pl.element().struct.field("content"))),
        chosen=assistant("chosen_turns"),
        rejected=assistant("rejected_turns"),
    )
    multi = joined.filter(pl.col("n_turns") != 1)
    if multi.height:
        prompts_col, chosen_col, rejected_col = [], [], []
        for row in multi.select("messages", "n_turns", "chosen_turns", "rejected_turns").iter_rows():
            messages, n_turns, ct, rt = row
            p, c = split_conversation(messages, n_turns, ct)
            _, r = split_conversation(messages, n_turns, rt)
            prompts_col.append(p)
            chosen_col.append(c)
            rejected_col.append(r)
        dtype = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
        multi = multi.with_columns(
            prompt=pl.Series(prompts_col, dtype=dtype),
            chosen=pl.Series(chosen_col, dtype=dtype),
            rejected=pl.Series(rejected_col, dtype=dtype),
        )
        single = pl.concat([single, multi], how="vertical_relaxed")
    return single.drop("messages", "n_turns")


def with_pair_ids(conv: pl.DataFrame) -> pl.DataFrame:
    """Add pair_id (:func:`tso_data.build.pairs.pair_ids`) unless the pairs carry it."""
    if "pair_id" in conv.columns:
        return conv
    return conv.with_columns(pair_id=pair_ids(conv))


def snapshot_digest(conv: pl.DataFrame, config_json: str) -> str:
    """The snapshot id: a content hash of the configuration and every pair's identity and
    scores (texts are fixed by the answer ids inside pair_id).

    >>> df = pl.DataFrame({"pair_id": ["b", "a"], "chosen_score": [1.0, None], "rejected_score": [None, 0.5]})
    >>> snapshot_digest(df, "{}") == snapshot_digest(df.reverse(), "{}")
    True
    """
    if not conv.get_column("pair_id").is_sorted():  # snapshot_table hands it over sorted
        conv = conv.sort("pair_id")
    lines = conv.select(
        pl.concat_str(
            pl.col("pair_id"),
            pl.col("chosen_score").cast(pl.String).fill_null(""),
            pl.col("rejected_score").cast(pl.String).fill_null(""),
            separator=",",
        ).str.join("\n")
    ).item()
    digest = hashlib.sha256(lines.encode("utf-8")).hexdigest()
    return content_hash("snapshot", SCHEMA_VERSION, config_json, digest)


def _snapshot_frame(conv: pl.DataFrame, round_: int) -> pl.DataFrame:
    """The snapshot's columns in pair_id order (the turns columns of the pairs are not
    written, so they are selected away before the one gather)."""
    frame = with_pair_ids(conv).select(
        "prompt", "chosen", "rejected", "pair_id", "prompt_id", "kind", "chosen_source", "rejected_source",
        "chosen_score", "rejected_score",
    )
    if not frame.get_column("pair_id").is_sorted():  # build_pairs hands them over sorted
        frame = frame[frame.get_column("pair_id").arg_sort()]
    return frame.with_columns(pl.lit(round_, dtype=pl.Int32).alias("round"))


def _metadata(snapshot_id: str, round_: int, config_json: str) -> dict[bytes, bytes]:
    return {
        b"tso.schema_version": SCHEMA_VERSION.encode(),
        b"tso.snapshot_id": snapshot_id.encode(),
        b"tso.round": str(round_).encode(),
        b"tso.config": config_json.encode(),
    }


def snapshot_table(conv: pl.DataFrame, round_: int, config: dict[str, object]) -> tuple[pa.Table, str]:
    """The snapshot's Arrow table (rows sorted by pair_id, exact §4 schema, metadata) and its id."""
    frame = _snapshot_frame(conv, round_)
    config_json = canonical_json(config)
    with ThreadPoolExecutor(max_workers=1) as thread:  # the digest beside the Arrow conversion
        digest = thread.submit(snapshot_digest, frame.select("pair_id", "chosen_score", "rejected_score"), config_json)
        table = frame.to_arrow().cast(SNAPSHOT_SCHEMA)
        snapshot_id = digest.result()
    return table.replace_schema_metadata(_metadata(snapshot_id, round_, config_json)), snapshot_id


def write_snapshot(
    pairs: pl.DataFrame, prompts: pl.DataFrame, round_: int, config: dict[str, object], directory: Path
) -> tuple[str, Path, bool, int]:
    """Pairs → the snapshot file ``directory/<id>.parquet``: the file that :func:`to_conversations`,
    :func:`snapshot_table` and :func:`write_snapshot_file` give (same bytes), on two threads.

    The Parquet writer is single-threaded and the largest part of the work, so it starts as
    soon as the id is known (it needs only pair ids and scores) and writes the first half of
    the rows while a second thread builds the second half's conversations. The halves split
    at a row-group boundary, so the row groups are those of the one-table write.
    Returns (snapshot id, path, created, rows); never overwrites an existing file.
    """
    pairs = with_pair_ids(pairs)
    if not pairs.get_column("pair_id").is_sorted():  # build_pairs hands them over sorted
        pairs = pairs.sort("pair_id")
    config_json = canonical_json(config)
    step = int(WRITER_OPTIONS["row_group_size"])  # type: ignore[call-overload]
    split = step * round(pairs.height / 2 / step)
    halves = [pairs.slice(0, split), pairs.slice(split)] if 0 < split < pairs.height else [pairs]

    def arrow(part: pl.DataFrame) -> pa.Table:
        return _snapshot_frame(to_conversations(part, prompts), round_).to_arrow().cast(SNAPSHOT_SCHEMA)

    with ThreadPoolExecutor(max_workers=1) as thread:  # converts the halves in order
        tables = [thread.submit(arrow, half) for half in halves]
        snapshot_id = snapshot_digest(pairs.select("pair_id", "chosen_score", "rejected_score"), config_json)
        path = directory / f"{snapshot_id}.parquet"
        if path.exists():
            for table in tables:
                table.cancel()
            return snapshot_id, path, False, pairs.height
        schema = SNAPSHOT_SCHEMA.with_metadata(_metadata(snapshot_id, round_, config_json))
        _write_atomic(schema, (table.result() for table in tables), path)
    return snapshot_id, path, True, pairs.height


def _write_atomic(schema: pa.Schema, tables: Iterable[pa.Table], path: Path) -> None:
    """:func:`tso_data.shards.write_atomic_parquet` for a table that arrives in parts."""
    options = {k: v for k, v in WRITER_OPTIONS.items() if k != "row_group_size"}
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, **options) as writer:  # type: ignore[arg-type]
            for table in tables:
                writer.write_table(table, row_group_size=WRITER_OPTIONS["row_group_size"])  # type: ignore[arg-type]


def write_snapshot_file(table: pa.Table, path: Path) -> bool:
    """Write atomically; never overwrite. Returns False if the file already existed."""
    if path.exists():
        return False
    write_atomic_parquet(table, path, **WRITER_OPTIONS)
    return True


def read_metadata(path: Path) -> dict[str, str]:
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"tso.")}
