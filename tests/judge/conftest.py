"""Judge-area fixtures: small catalogs filled by direct inserts (the ingest commands belong
to another area; these helpers write exactly the rows they would)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pytest

from tso_data.catalog import Catalog
from tso_data.generate.backend import Request, Result
from tso_data.ids import answer_id, feedback_id, prompt_id, response_id
from tso_data.matrix import add_model


def add_prompt(catalog: Catalog, messages: list[dict[str, str]], *, split: str = "train",
               category: str | None = None) -> str:
    pid = prompt_id(messages)
    n_turns = sum(1 for m in messages if m["role"] == "user")
    with catalog.connect(read_only=False) as con:
        con.execute(
            "INSERT INTO prompts (prompt_id, messages, n_turns, source, category, split, added_at) "
            "SELECT ?, ?::STRUCT(role VARCHAR, content VARCHAR)[], ?, 'test', ?, ?, now() "
            "WHERE NOT EXISTS (SELECT 1 FROM prompts WHERE prompt_id = ?)",
            [pid, messages, n_turns, category, split, pid],
        )
    return pid


def add_response(catalog: Catalog, pid: str, model: str, turns: list[str], sample_index: int = 0) -> str:
    rid = response_id(pid, model, "ingested", sample_index)
    with catalog.connect(read_only=False) as con:
        con.execute(
            "INSERT INTO responses (response_id, prompt_id, model, sample_index, turns, sampling, backend, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'ingested', 'ingested', now())",
            [rid, pid, model, sample_index, turns],
        )
    return rid


def add_answer(catalog: Catalog, pid: str, turns: list[str], source: str = "human") -> str:
    aid = answer_id(pid, source, turns)
    with catalog.connect(read_only=False) as con:
        con.execute(
            "INSERT INTO answers (answer_id, prompt_id, source, turns, added_at) VALUES (?, ?, ?, ?, now())",
            [aid, pid, source, turns],
        )
    return aid


def add_feedback(catalog: Catalog, target_id: str, pid: str, score: float, *, rubric: str = "overall",
                 rationale: str = "", split: str = "heldout", annotator: str = "human") -> str:
    fid = feedback_id(target_id, rubric, annotator, score, rationale)
    with catalog.connect(read_only=False) as con:
        con.execute(
            "INSERT INTO feedback (feedback_id, target_id, target_kind, prompt_id, rubric, score, rationale, "
            "annotator, split, added_at) VALUES (?, ?, 'response', ?, ?, ?, ?, ?, ?, now())",
            [fid, target_id, pid, rubric, score, rationale, annotator, split],
        )
    return fid


def add_models(catalog: Catalog, *names: str) -> None:
    for i, name in enumerate(names):
        add_model(catalog, name, family="t", version=str(i + 1), size_b=1.0)


@dataclass
class ScriptedBackend:
    """A Backend that answers each request with the next text its script gives for the
    judgment (by key); records every request it saw."""

    script: dict[str, list[str | None]]
    default: list[str | None]
    name: str = "scripted"

    def __post_init__(self) -> None:
        self.requests: list[Request] = []
        self.calls: dict[str, int] = {}

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        for req in requests:
            self.requests.append(req)
            n = self.calls.get(req.key, 0)
            self.calls[req.key] = n + 1
            texts = self.script.get(req.key, self.default)
            text = texts[min(n, len(texts) - 1)]
            if text is None:
                yield Result(key=req.key, text=None, error="HTTP 500: server error")
            else:
                yield Result(key=req.key, text=text)

    def close(self) -> None:
        pass


def _fill_small_catalog(catalog: Catalog) -> dict[str, object]:
    add_models(catalog, "m-base", "m-big")
    p1 = add_prompt(catalog, [{"role": "user", "content": "What is 2+2?"}])
    p2 = add_prompt(catalog,
                    [{"role": "user", "content": "Name a prime."}, {"role": "user", "content": "Another one?"}])
    return {
        "p1": p1,
        "p2": p2,
        "base1": [add_response(catalog, p1, "m-base", ["4"], i) for i in range(3)],
        "base2": [add_response(catalog, p2, "m-base", ["2", "3"], i) for i in range(3)],
        "big1": add_response(catalog, p1, "m-big", ["2+2 = 4."]),
        "human1": add_answer(catalog, p1, ["Four."]),
    }


@pytest.fixture(scope="session")
def _small_catalog_template(tmp_path_factory: pytest.TempPathFactory):
    catalog = Catalog.init(tmp_path_factory.mktemp("judge-template") / "catalog")
    return catalog.root, _fill_small_catalog(catalog)


@pytest.fixture()
def small_catalog(_small_catalog_template, tmp_path):
    """Two prompts (one two-turn), answers from base 'm-base' (3 samples each), 'm-big' and
    human; a fresh copy per test (built once: opening DuckDB per insert is slow)."""
    import shutil

    root, ids = _small_catalog_template
    shutil.copytree(root, tmp_path / "catalog")
    return Catalog.open(tmp_path / "catalog"), ids


@pytest.fixture(scope="session")
def jh():
    """The helpers above (add_prompt, add_response, ..., ScriptedBackend) for test modules."""
    import sys

    return sys.modules[__name__]
