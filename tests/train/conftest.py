"""Fixtures of the trainer's tests: snapshots written directly with pyarrow (the contract of
docs/design.md, 4. The snapshot contract: tso_train.snapshot.SNAPSHOT_SCHEMA, which a test holds
equal to the writer's in tso_data), hh-rlhf pairs, and a tiny model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tso_train.snapshot import MESSAGES, SCHEMA_VERSION, SNAPSHOT_SCHEMA


def write_snapshot(path: Path, pairs: list[dict], *, version: str = SCHEMA_VERSION, drop: tuple[str, ...] = ()) -> Path:
    """pairs: dicts with prompt/chosen/rejected message lists."""
    rows = []
    for i, p in enumerate(pairs):
        rows.append({
            "prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
            "pair_id": f"pair-{i}", "prompt_id": f"prompt-{i}", "kind": "matrix",
            "chosen_source": "big", "rejected_source": "small",
            "chosen_score": None, "rejected_score": None, "round": 1,
        })
    table = pa.Table.from_pylist(rows, schema=SNAPSHOT_SCHEMA)
    table = table.drop_columns(list(drop))
    meta = {"tso.schema_version": version, "tso.snapshot_id": "snap-test", "tso.round": "1",
            "tso.config": json.dumps({"seed": 43})}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def hh_pairs(shared_data: Path, n: int, *, max_chars: int = 400, multi_turn: bool = False) -> list[dict]:
    """The first n short hh-rlhf pairs in the snapshot layout (prompt = first user turn)."""
    out = []
    with (shared_data / "hh_rlhf" / "harmless_base_test.jsonl").open() as f:
        for line in f:
            r = json.loads(line)
            msgs = r["prompt_messages"]
            if not multi_turn and r["n_user_turns"] != 1:
                continue
            total = sum(len(m["content"]) for m in msgs) + len(r["chosen_response"]) + len(r["rejected_response"])
            if total > max_chars or r["chosen_response"] == r["rejected_response"]:
                continue
            out.append({
                "prompt": msgs[:1],
                "chosen": msgs[1:] + [{"role": "assistant", "content": r["chosen_response"]}],
                "rejected": msgs[1:] + [{"role": "assistant", "content": r["rejected_response"]}],
            })
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="session")
def hh_model_dir(tmp_path_factory, shared_data: Path) -> Path:
    """A tiny Llama whose tokenizer was trained on hh-rlhf text (so tokens are not bytes)."""
    from tso_train.tiny import build_tiny_causal_lm

    texts = []
    with (shared_data / "hh_rlhf" / "harmless_base_test.jsonl").open() as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            texts += [m["content"] for m in r["prompt_messages"]] + [r["chosen_response"], r["rejected_response"]]
            if i > 400:
                break
    return build_tiny_causal_lm(tmp_path_factory.mktemp("hh-model"), corpus=texts, vocab_size=2000, seed=0)


@pytest.fixture(scope="session")
def hh_snapshot(tmp_path_factory, shared_data: Path) -> Path:
    return write_snapshot(tmp_path_factory.mktemp("snap") / "hh.parquet", hh_pairs(shared_data, 48))


def env_for_subprocess() -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "packages/tso-train/src"), env.get("PYTHONPATH", "")])
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="session")
def th():
    """Helpers for the trainer's tests (importlib mode cannot import conftest directly)."""
    from types import SimpleNamespace

    return SimpleNamespace(write_snapshot=write_snapshot, hh_pairs=hh_pairs, MESSAGES=MESSAGES,
                           env=env_for_subprocess)
