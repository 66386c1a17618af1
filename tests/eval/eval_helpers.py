"""Eval-area test helpers: catalogs written in one transaction (prompts, models, answers and
judge scores given as plain Python), a scripted verdict backend, and a stub server whose
replies are pairwise verdicts. Imported by plain name (conftest puts this directory on
sys.path)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from tso_data.catalog import Catalog
from tso_data.generate.backend import Request, Result
from tso_data.generate.stub_server import StubServer
from tso_data.ids import judgment_id, prompt_id, response_id
from tso_data.matrix import model_info, write_model

T0 = datetime(2025, 1, 1)


def question(i: int) -> str:
    return f"Question number {i}: what is {i} + {i}?"


def make_catalog(root: Path, *, models: dict[str, dict[str, object]], n_prompts: int, heldout: int,
                 answers: dict[str, list[str | None]], scores: dict[str, list[float | None]] | None = None,
                 judge: str = "j", categories: tuple[str, ...] = ("math", "words")) -> Catalog:
    """Prompts 0..n_prompts-1 (the first ``heldout`` in split heldout), ``models`` (name ->
    model_info kwargs), ``answers[model][i]`` (None: no answer to prompt i) and
    ``scores[model][i]`` (a judge score of that answer; None: none) — in one transaction."""
    catalog = Catalog.init(root)
    pids = [prompt_id([{"role": "user", "content": question(i)}]) for i in range(n_prompts)]
    prompts = [{"prompt_id": pid, "messages": [{"role": "user", "content": question(i)}], "n_turns": 1,
                "source": "test", "category": categories[i % len(categories)], "language": None,
                "external_id": str(i), "split": "heldout" if i < heldout else "train", "added_at": T0}
               for i, pid in enumerate(pids)]
    responses, judgments = [], []
    for model, texts in answers.items():
        for i, text in enumerate(texts):
            if text is None:
                continue
            rid = response_id(pids[i], model, "ingested", 0)
            responses.append({"response_id": rid, "prompt_id": pids[i], "model": model, "sample_index": 0,
                              "turns": [text], "sampling": "ingested", "backend": "ingested", "prompt_tokens": None,
                              "completion_tokens": None, "finish_reason": "stop", "latency_s": None, "created_at": T0})
            score = (scores or {}).get(model, [None] * len(texts))[i]
            if score is not None:
                judgments.append({"judgment_id": judgment_id(rid, judge, "overall", "1", "0"), "target_id": rid,
                                  "target_kind": "response", "prompt_id": pids[i], "source": model, "judge": judge,
                                  "judge_version": None, "rubric": "overall", "rubric_version": "1", "sample_index": 0,
                                  "raw_text": f"Score: {score:g}", "score": float(score), "status": "ok",
                                  "attempts": 1, "scale_min": 1.0, "scale_max": 10.0, "created_at": T0})
    with catalog.connect(read_only=False) as con:
        for name, kwargs in models.items():
            write_model(con, model_info(name, **{"family": "t", "version": "1", "size_b": 1.0, **kwargs}))
        for table, rows in (("prompts", prompts), ("responses", responses), ("judgments", judgments)):
            if rows:
                con.register("_rows", pa.Table.from_pylist(rows))
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
                con.unregister("_rows")
    return catalog


def table_counts(catalog: Catalog) -> dict[str, int]:
    """Rows per table, and shard files: what 'nothing stored' compares."""
    with catalog.connect(read_only=True) as con:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        counts = {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in names}
    counts["shard files"] = len(list((catalog.root / "shards").rglob("*.parquet")))
    return counts


@dataclass
class ScriptedJudge:
    """A Backend whose reply to each request is ``reply(request)``; records the requests."""

    reply: object
    name: str = "scripted"
    requests: list[Request] = field(default_factory=list)

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        for request in requests:
            self.requests.append(request)
            yield Result(key=request.key, text=self.reply(request))  # type: ignore[operator]

    def close(self) -> None:
        pass


def replies_of(request_messages: list[dict[str, str]]) -> tuple[str, str]:
    """The two replies a pairwise judge prompt shows (A, B)."""
    user = request_messages[-1]["content"]
    a = user.split("[Reply A]\n", 1)[1].split("\n[End of reply A]", 1)[0]
    b = user.split("[Reply B]\n", 1)[1].split("\n[End of reply B]", 1)[0]
    return a, b


class VerdictStub(StubServer):
    """The stub server, answering pairwise prompts as a judge that prefers the longer reply
    (and generation prompts as the plain stub does)."""

    def _completion(self, messages, request):  # type: ignore[override]
        body = super()._completion(messages, request)
        if messages and "[Reply A]" in messages[-1].get("content", ""):
            a, b = replies_of(messages)
            verdict = "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"
            body["choices"][0]["message"]["content"] = f"Reply format: [[A]] or [[B]].\nDecision: {verdict}"
        return body



def write_alpaca_annotations(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps(rows, indent=2))
    return path


def length_score(messages: list[dict[str, str]], turns: list[str], reference: list[str] | None) -> float:
    """A function judge for tests: longer answers score higher, 1-10."""
    return float(min(10, 1 + len(turns[-1]) // 10))
