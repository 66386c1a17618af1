"""Read and validate a pair snapshot (docs/design.md, 4. The snapshot contract) — the only thing
tso-train reads from tso-data.

Two kinds of file are accepted:

* a **TSO snapshot**: key-value metadata ``tso.schema_version`` = ``"1"`` and all columns
  (``prompt``, ``chosen``, ``rejected`` as list<struct<role, content>> plus the provenance
  columns ``pair_id``, ``prompt_id``, ``kind``, ``chosen_source``, ``rejected_source``,
  ``chosen_score``, ``rejected_score``, ``round``);
* a **plain TRL conversational preference file** (no ``tso.*`` metadata): only ``prompt``,
  ``chosen`` and ``rejected`` are required; pairs are then named by their row number (from 1).

Anything else fails before any model is loaded, with one line naming the file, row (counted
from 1) and field; so does a pair whose chosen equals its rejected, or a repeated ``pair_id``.
``prompt`` holds the conversation up to the first assistant turn (system/user messages);
``chosen``/``rejected`` hold the continuation, which starts with an assistant turn and may
alternate with later user turns (multi-turn prompts). Only assistant tokens are trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tso_train.errors import TSOTrainError

SCHEMA_VERSION = "1"
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
# The contract's columns and types. tso-data writes them (tso_data never gets imported here, so
# this is tso-train's own copy; tests/train/test_train_data.py holds it equal to the writer's).
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
CONVERSATION_COLUMNS = ("prompt", "chosen", "rejected")
PROVENANCE_COLUMNS = tuple(name for name in SNAPSHOT_SCHEMA.names if name not in CONVERSATION_COLUMNS)

Message = dict[str, str]


@dataclass(frozen=True)
class PreferencePair:
    pair_id: str
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]


@dataclass(frozen=True)
class Snapshot:
    path: Path
    pairs: list[PreferencePair]
    snapshot_id: str | None = None
    round: int | None = None
    config: dict = field(default_factory=dict)
    is_tso: bool = True


def _is_message_list(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return False
    value = t.value_type
    if not pa.types.is_struct(value):
        return False
    names = {value.field(i).name for i in range(value.num_fields)}
    return {"role", "content"} <= names


def _check_conversation(path: Path, row: int, column: str, messages: list[Message]) -> None:
    def fail(msg: str) -> None:
        raise TSOTrainError(f"{path}: row {row}: field '{column}': {msg}")

    if not messages:
        fail("empty conversation")
    for m in messages:
        if not isinstance(m.get("content"), str) or m.get("role") not in {"system", "user", "assistant"}:
            fail(f"bad message {m!r} (need role in system|user|assistant and string content)")
    roles = [m["role"] for m in messages]
    if column == "prompt":
        if roles[-1] != "user":
            fail(f"must end with a user message, ends with {roles[-1]!r}")
        if "assistant" in roles:
            fail("holds an assistant message; the prompt is the conversation up to the first answer")
    else:
        if roles[0] != "assistant":
            fail(f"must start with the assistant's answer, starts with {roles[0]!r}")
        for a, b in zip(roles, roles[1:]):
            if a == b:
                fail(f"two consecutive {a!r} messages")
        if roles[-1] != "assistant":
            fail("must end with an assistant message")


def read_snapshot(path: str | Path) -> Snapshot:
    """Validate the file's schema version and columns first, then every row."""
    path = Path(path)
    if not path.is_file():
        raise TSOTrainError(f"{path}: no such snapshot file")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TSOTrainError(f"{path}: not a Parquet file ({exc})") from None
    schema = pf.schema_arrow
    # the footer's key-value metadata: tso-data adds tso.snapshot_id there after the last row group,
    # so a file that also stores an Arrow schema may lack it in the schema's own metadata
    meta = {k.decode(): v.decode() for k, v in (pf.metadata.metadata or {}).items() if k != b"ARROW:schema"}
    is_tso = "tso.schema_version" in meta
    if is_tso and meta["tso.schema_version"] != SCHEMA_VERSION:
        raise TSOTrainError(
            f"{path}: snapshot schema version {meta['tso.schema_version']!r}, "
            f"this tso-train reads version {SCHEMA_VERSION!r}"
        )
    required = CONVERSATION_COLUMNS + (PROVENANCE_COLUMNS if is_tso else ())
    missing = [c for c in required if c not in schema.names]
    if missing:
        kind = "TSO snapshot" if is_tso else "preference file (no tso.schema_version metadata)"
        raise TSOTrainError(f"{path}: {kind} is missing column(s) {', '.join(missing)}")
    for c in CONVERSATION_COLUMNS:
        if not _is_message_list(schema.field(c).type):
            raise TSOTrainError(
                f"{path}: field '{c}': type {schema.field(c).type} is not list<struct<role, content>>"
                " (tso-train reads conversational pairs only)"
            )

    columns = list(CONVERSATION_COLUMNS) + (["pair_id"] if is_tso else [])
    pairs = _read_pairs(path, pf.read(columns=columns).to_pydict(), is_tso)
    if not pairs:
        raise TSOTrainError(f"{path}: the snapshot holds no pairs")

    config: dict = {}
    if "tso.config" in meta:
        try:
            config = json.loads(meta["tso.config"])
        except json.JSONDecodeError:
            raise TSOTrainError(f"{path}: metadata 'tso.config' is not JSON") from None
    round_ = meta.get("tso.round")
    return Snapshot(
        path=path,
        pairs=pairs,
        snapshot_id=meta.get("tso.snapshot_id"),
        round=int(round_) if round_ not in (None, "") else None,
        config=config,
        is_tso=is_tso,
    )


def _read_pairs(path: Path, data: dict[str, list], is_tso: bool) -> list[PreferencePair]:
    """Every row checked; rows count from 1, as tso-data counts lines."""
    pairs: list[PreferencePair] = []
    first_row_of: dict[str, int] = {}
    for index in range(len(data["prompt"])):
        row = index + 1
        conv = {}
        for c in CONVERSATION_COLUMNS:
            messages = [{"role": m["role"], "content": m["content"]} for m in (data[c][index] or [])]
            _check_conversation(path, row, c, messages)
            conv[c] = messages
        if conv["chosen"] == conv["rejected"]:
            raise TSOTrainError(f"{path}: row {row}: field 'rejected': equals 'chosen' "
                                "(a pair must differ; drop the row)")
        pair_id = data["pair_id"][index] if is_tso else str(row)
        if pair_id is None:
            raise TSOTrainError(f"{path}: row {row}: field 'pair_id': null")
        if str(pair_id) in first_row_of:
            raise TSOTrainError(f"{path}: row {row}: field 'pair_id': {pair_id!r} "
                                f"repeats row {first_row_of[str(pair_id)]}")
        first_row_of[str(pair_id)] = row
        pairs.append(PreferencePair(pair_id=str(pair_id), **conv))
    return pairs


def check_sft_messages(where: str, messages: list[Message]) -> None:
    """An SFT conversation: valid messages, at least one assistant turn. ``where`` names the
    file and row (or line)."""
    for m in messages:
        if not isinstance(m.get("content"), str) or m.get("role") not in {"system", "user", "assistant"}:
            raise TSOTrainError(f"{where}: field 'messages': bad message {m!r}")
    if not any(m["role"] == "assistant" for m in messages):
        raise TSOTrainError(f"{where}: field 'messages': no assistant message to learn from")
