"""The snapshot contract as tso-train reads it, and chat-template encoding with assistant masks."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tso_train.data import EncodedSequence, encode_conversation, encode_pairs, truncate_pair
from tso_train.errors import TSOTrainError
from tso_train.snapshot import PROVENANCE_COLUMNS, SCHEMA_VERSION, SNAPSHOT_SCHEMA, read_snapshot

U = lambda c: {"role": "user", "content": c}  # noqa: E731
A = lambda c: {"role": "assistant", "content": c}  # noqa: E731
PAIR = {"prompt": [U("What is 2+3?")], "chosen": [A("It is 5.")], "rejected": [A("It is 6.")]}


def test_the_reader_schema_is_the_writers():
    """tso_train keeps its own copy of the contract (it never imports tso_data; docs/design.md,
    2. Architecture): column names, order and types, and the schema version, equal the writer's."""
    writer = importlib.import_module("tso_data.pairs.snapshot")  # imported by name: tso_train never imports it
    assert SNAPSHOT_SCHEMA.equals(writer.SNAPSHOT_SCHEMA, check_metadata=False), (SNAPSHOT_SCHEMA,
                                                                                  writer.SNAPSHOT_SCHEMA)
    assert SNAPSHOT_SCHEMA.field("round").type == pa.int32()
    assert SCHEMA_VERSION == writer.SCHEMA_VERSION


def test_reads_a_tso_snapshot(tmp_path, shared_data, th):
    pairs = th.hh_pairs(shared_data, 5, multi_turn=True)
    snap = read_snapshot(th.write_snapshot(tmp_path / "s.parquet", pairs))
    assert snap.is_tso and snap.snapshot_id == "snap-test" and snap.round == 1 and snap.config == {"seed": 43}
    assert [p.pair_id for p in snap.pairs] == [f"pair-{i}" for i in range(5)]
    assert snap.pairs[0].chosen == pairs[0]["chosen"]


def test_snapshot_loads_in_hf_datasets(tmp_path, th):
    """The contract promises `datasets.load_dataset("parquet", ...)` reads it as it is."""
    import datasets

    path = th.write_snapshot(tmp_path / "s.parquet", [PAIR, PAIR])
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert ds[0]["chosen"] == PAIR["chosen"] and set(PROVENANCE_COLUMNS) <= set(ds.column_names)


def test_accepts_a_plain_trl_preference_file(tmp_path, th):
    table = pa.table({c: pa.array([PAIR[c]], type=th.MESSAGES) for c in ("prompt", "chosen", "rejected")})
    pq.write_table(table, tmp_path / "trl.parquet")
    snap = read_snapshot(tmp_path / "trl.parquet")
    assert not snap.is_tso and snap.pairs[0].pair_id == "1"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p, th: th.write_snapshot(p, [PAIR], version="2"), "schema version '2'"),
        (lambda p, th: th.write_snapshot(p, [PAIR], drop=("kind", "round")), "missing column(s) kind, round"),
        (lambda p, th: th.write_snapshot(p, [{**PAIR, "prompt": [A("hi")]}]), "row 1: field 'prompt'"),
        (lambda p, th: th.write_snapshot(p, [{**PAIR, "chosen": [U("hi")]}]),
         "row 1: field 'chosen': must start with the assistant"),
        (lambda p, th: th.write_snapshot(p, [{**PAIR, "rejected": []}]), "row 1: field 'rejected': empty"),
        (lambda p, th: p.write_text("not parquet") and p, "not a Parquet file"),
        (lambda p, th: pq.write_table(pa.table({"prompt": ["q"], "chosen": ["a"], "rejected": ["b"]}), p) or p,
         "field 'prompt': type string is not list<struct<role, content>>"),
    ],
)
def test_bad_snapshots_fail_with_one_clear_line(tmp_path, th, make, message):
    path = tmp_path / "bad.parquet"
    make(path, th)
    with pytest.raises(TSOTrainError) as exc:
        read_snapshot(path)
    assert message in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_assistant_mask_covers_exactly_the_answers(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [U("first question"), A("first answer"), U("second question"), A("second answer")]
    seq = encode_conversation(tok, messages)
    masked = tok.decode(seq.input_ids[seq.label_mask])
    unmasked = tok.decode(seq.input_ids[~seq.label_mask])
    assert "first answer" in masked and "second answer" in masked
    assert "question" not in masked and "<|user|>" not in masked
    assert "first question" in unmasked and "second question" in unmasked
    # the end-of-turn marker after each answer is trained (the model learns to stop)
    assert masked.count("<|end|>") == 2
    # one tokenisation of the whole rendered text
    assert seq.input_ids.tolist() == tok(tok.apply_chat_template(messages, tokenize=False),
                                         add_special_tokens=False)["input_ids"]


def test_truncation_keeps_prompt_end_and_answer_start():
    ids = np.arange(20)
    chosen = EncodedSequence(ids, np.array([False] * 12 + [True] * 8))
    rejected = EncodedSequence(ids[:16], np.array([False] * 12 + [True] * 4))
    c, r = truncate_pair(chosen, rejected, 10)
    # prompt keeps max(10 // 2, 10 - 8) = 5 tokens: 7..11; answers cut at the end
    assert c.input_ids.tolist() == list(range(7, 17)) and r.input_ids.tolist() == list(range(7, 16))
    assert c.label_mask.sum() == 5 and r.label_mask.sum() == 4


def test_encode_pairs_counts_truncations(tiny_model_dir, shared_data, th):
    from transformers import AutoTokenizer

    from tso_train.snapshot import PreferencePair

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = [PreferencePair(str(i), **p) for i, p in enumerate(th.hh_pairs(shared_data, 6))]
    full = encode_pairs(tok, pairs, None)
    cut = encode_pairs(tok, pairs, 48)
    assert full.n_truncated == 0 and cut.n_truncated + cut.n_dropped > 0
    assert all(p.length <= 48 for p in cut.pairs)
    assert json.dumps([p.index for p in full.pairs]) == json.dumps(list(range(6)))
