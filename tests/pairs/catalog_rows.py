"""Test helper: put rows into a catalog with small direct inserts (ids from tso_data.ids),
standing in for the ingest API of the catalog issue."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from tso_data import ids
from tso_data.catalog import Catalog
from tso_data.matrix import add_model

MSG = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def _insert(catalog: Catalog, table: pa.Table, sql: str) -> None:
    """Run ``sql`` with ``table`` registered as ``src``."""
    with catalog.connect(read_only=False) as con:
        con.register("src", table)
        con.execute(sql)


def add_models(catalog: Catalog, cells: Sequence[tuple[str, str, str, float]]) -> None:
    """cells: (name, family, version, size_b)."""
    for name, family, version, size in cells:
        add_model(catalog, name, family=family, version=version, size_b=size)


def add_prompts(catalog: Catalog, rows: Sequence[tuple[list[dict[str, str]], str]], source: str = "test") -> list[str]:
    """rows: (messages, split). Returns prompt ids (n_turns = number of user messages)."""
    pids = [ids.prompt_id(m) for m, _ in rows]
    table = pa.table({
        "prompt_id": pids,
        "messages": pa.array([m for m, _ in rows], type=MSG),
        "n_turns": pa.array([sum(x["role"] == "user" for x in m) for m, _ in rows], type=pa.int32()),
        "source": [source] * len(rows),
        "split": [s for _, s in rows],
    })
    _insert(catalog, table, (
        "INSERT INTO prompts (prompt_id, messages, n_turns, source, split, added_at) "
        "SELECT prompt_id, messages, n_turns, source, split, now() FROM src "
        "WHERE prompt_id NOT IN (SELECT prompt_id FROM prompts)"
    ))
    return pids


def add_answers(catalog: Catalog, rows: Sequence[tuple[str, str, list[str]]]) -> list[str]:
    """rows: (prompt_id, source, turns)."""
    aids = [ids.answer_id(p, s, t) for p, s, t in rows]
    table = pa.table({
        "answer_id": aids, "prompt_id": [r[0] for r in rows], "source": [r[1] for r in rows],
        "turns": pa.array([r[2] for r in rows], type=pa.list_(pa.string())),
    })
    _insert(catalog, table, (
        "INSERT INTO answers (answer_id, prompt_id, source, turns, added_at) "
        "SELECT DISTINCT ON (answer_id) answer_id, prompt_id, source, turns, now() FROM src"
    ))
    return aids


def add_responses(catalog: Catalog, rows: Sequence[tuple[str, str, int, list[str]]]) -> list[str]:
    """rows: (prompt_id, model, sample_index, turns)."""
    rids = [ids.response_id(p, m, "ingested", i) for p, m, i, _ in rows]
    table = pa.table({
        "response_id": rids, "prompt_id": [r[0] for r in rows], "model": [r[1] for r in rows],
        "sample_index": pa.array([r[2] for r in rows], type=pa.int32()),
        "turns": pa.array([r[3] for r in rows], type=pa.list_(pa.string())),
    })
    _insert(catalog, table, (
        "INSERT INTO responses (response_id, prompt_id, model, sample_index, turns, sampling, backend, created_at) "
        "SELECT response_id, prompt_id, model, sample_index, turns, 'ingested', 'ingested', now() FROM src"
    ))
    return rids


def add_judgments(
    catalog: Catalog,
    rows: Sequence[tuple[str, str, str, str, float | None, str]],
    rubric: str = "overall",
) -> None:
    """rows: (target_id, prompt_id, source, judge, score or None, key). None → status 'unparsed'."""
    table = pa.table({
        "judgment_id": [ids.judgment_id(t, j, rubric, "1", k) for t, _, _, j, _, k in rows],
        "target_id": [r[0] for r in rows], "prompt_id": [r[1] for r in rows], "source": [r[2] for r in rows],
        "judge": [r[3] for r in rows],
        "score": pa.array([r[4] for r in rows], type=pa.float64()),
        "status": ["ok" if r[4] is not None else "unparsed" for r in rows],
    })
    _insert(catalog, table, (
        "INSERT INTO judgments (judgment_id, target_id, target_kind, prompt_id, source, judge, rubric, "
        f"rubric_version, sample_index, score, status, attempts, created_at) SELECT judgment_id, target_id, "
        f"'response', prompt_id, source, judge, '{rubric}', '1', 0, score, status, 1, now() FROM src"
    ))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
