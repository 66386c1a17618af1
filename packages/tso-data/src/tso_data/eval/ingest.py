"""`tso-data ingest verdicts FILE...`: existing pairwise evaluations (AlpacaEval annotations,
FastChat pairwise judgments) into the `verdicts` table, so they enter the leaderboard as
they are.

One transaction per file: every record is resolved and checked before anything is
written, and any problem stores nothing of that file. Re-ingesting adds nothing (ids are
content hashes).

* **AlpacaEval**: the instruction is the prompt (one user message). A generator's output
  must equal one of its stored answers to that prompt; when it has none, the output is
  stored as an ingested response, and a prompt the catalog lacks is created (split
  ``heldout`` unless ``--set split=...``; ``external_id`` = the record's 0-based position,
  which is AlpacaEval's ``index``, so its ``instruction_difficulty.csv`` matches; category
  = the record's ``dataset``). Generators that are not registered are registered off the
  matrix (no family, version or size).
* **FastChat**: ``question_id`` is a prompt's external id (``--prompt-source`` narrows the
  lookup); both models' answers must be stored, and when the file carries the judge
  prompt, each stored answer must appear in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from tso_data.catalog import Catalog, insert_new
from tso_data.errors import TSODataError, located
from tso_data.eval.annotations import Annotation, check_overrides, read_annotations
from tso_data.eval.store import VERDICT_SCHEMA, create_verdicts_table, now
from tso_data.ids import prompt_id as make_prompt_id
from tso_data.ids import response_id, verdict_id


@dataclass
class VerdictsReport:
    file: str
    format: str
    records: int = 0
    verdicts: int = 0
    new_verdicts: int = 0
    unparsed: int = 0
    new_prompts: int = 0
    new_responses: int = 0
    new_models: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class _Resolved:
    prompts: list[dict[str, object]] = field(default_factory=list)
    responses: list[dict[str, object]] = field(default_factory=list)
    verdicts: list[dict[str, object]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


def ingest_verdict_files(catalog: Catalog, files: list[str], constants: dict[str, str],
                         prompt_source: str | None = None) -> list[VerdictsReport]:
    overrides = check_overrides(constants)
    reports = []
    for name in files:
        path = Path(name)
        kind, annotations = read_annotations(path, overrides)
        with catalog.connect(read_only=False) as con:
            create_verdicts_table(con)
            if kind == "alpaca_eval":
                resolved = _resolve_alpaca_eval(con, path, annotations, overrides)
            else:
                resolved = _resolve_fastchat(con, path, annotations, prompt_source)
            reports.append(_write(con, path, kind, annotations, resolved))
    return reports


def _answers(con: duckdb.DuckDBPyConnection,
             pairs: set[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[str, list[str]]]]:
    """Stored answers per (prompt_id, model): [(response_id, turns)] by sample index."""
    if not pairs:
        return {}
    con.register("_wanted", pa.table({"prompt_id": [p for p, _ in pairs], "model": [m for _, m in pairs]}))
    rows = con.execute(
        "SELECT r.prompt_id, r.model, r.response_id, r.turns FROM responses r "
        "JOIN _wanted w ON w.prompt_id = r.prompt_id AND w.model = r.model "
        "ORDER BY r.sample_index, r.response_id").fetchall()
    con.unregister("_wanted")
    found: dict[tuple[str, str], list[tuple[str, list[str]]]] = {}
    for pid, model, rid, turns in rows:
        found.setdefault((pid, model), []).append((rid, list(turns)))
    return found


def _resolve_alpaca_eval(con: duckdb.DuckDBPyConnection, path: Path, annotations: list[Annotation],
                         overrides: dict[str, str]) -> _Resolved:
    resolved = _Resolved()
    models = {name: kind for name, kind in con.execute("SELECT name, kind FROM models").fetchall()}
    pids = {a.record: make_prompt_id([{"role": "user", "content": a.instruction or ""}]) for a in annotations}
    existing = {pid: n for pid, n in con.execute(
        "SELECT prompt_id, n_turns FROM prompts WHERE list_contains(?, prompt_id)",
        [list(set(pids.values()))]).fetchall()}
    stored = _answers(con, {(pids[a.record], s) for a in annotations for s in (a.source_1, a.source_2)})
    split = overrides.get("split", "heldout")
    for a in annotations:
        pid = pids[a.record]
        if pid not in existing:
            existing[pid] = 1
            resolved.prompts.append({
                "prompt_id": pid, "messages": [{"role": "user", "content": a.instruction}], "n_turns": 1,
                "source": overrides.get("source", "alpaca_eval"), "category": a.dataset,
                "external_id": str(a.record - 1), "split": split})
        elif existing[pid] != 1:
            raise located(path, a.record, "instruction", f"matches a stored prompt with {existing[pid]} turns; "
                                                         "AlpacaEval instructions are single-turn")
        targets = []
        for source, output, name in ((a.source_1, a.output_1, "output_1"), (a.source_2, a.output_2, "output_2")):
            if models.get(source, "model") == "human":
                raise located(path, a.record, name.replace("output", "generator"),
                              "human answers cannot be matched from annotations; use a model name")
            if source not in models:
                models[source] = "model"
                resolved.models.append(source)
            targets.append(_match_output(path, a.record, name, pid, source, output or "", stored, resolved))
        resolved.verdicts.append(_verdict_row(a, pid, targets[0], targets[1], overrides.get("judge_version")))
    return resolved


def _match_output(path: Path, record: int, field_name: str, pid: str, source: str, output: str,
                  stored: dict[tuple[str, str], list[tuple[str, list[str]]]], resolved: _Resolved) -> str:
    """The stored answer of ``source`` equal to ``output``, or a new ingested response."""
    answers = stored.get((pid, source))
    if not answers:
        rid = response_id(pid, source, "ingested", 0)
        stored[(pid, source)] = [(rid, [output])]
        resolved.responses.append({"response_id": rid, "prompt_id": pid, "model": source, "turns": [output]})
        return rid
    for rid, turns in answers:
        if turns == [output]:
            return rid
    raise located(path, record, field_name, f"differs from the {len(answers)} stored answer(s) of {source!r} "
                                            "to this instruction (outputs must match the catalog's answers)")


def _resolve_fastchat(con: duckdb.DuckDBPyConnection, path: Path, annotations: list[Annotation],
                      prompt_source: str | None) -> _Resolved:
    resolved = _Resolved()
    sql = "SELECT external_id, prompt_id FROM prompts WHERE external_id IS NOT NULL"
    params: list[object] = []
    if prompt_source is not None:
        sql += " AND source = ?"
        params.append(prompt_source)
    by_external: dict[str, list[str]] = {}
    for external, pid in con.execute(sql, params).fetchall():
        by_external.setdefault(external, []).append(pid)
    pids = {}
    for a in annotations:
        matches = by_external.get(a.question_id or "", [])
        if len(matches) != 1:
            problem = ("no prompt has this external id" if not matches
                       else "several prompts have this id; pass --prompt-source")
            raise located(path, a.record, "question_id", f"{a.question_id!r}: {problem}")
        pids[a.record] = matches[0]
    stored = _answers(con, {(pids[a.record], s) for a in annotations for s in (a.source_1, a.source_2)})
    for a in annotations:
        pid = pids[a.record]
        targets = []
        for source, name in ((a.source_1, "model_1"), (a.source_2, "model_2")):
            answers = stored.get((pid, source))
            if not answers:
                raise located(path, a.record, name, f"no stored answer of {source!r} to question {a.question_id}; "
                                                    "ingest the answers first (tso-data ingest responses)")
            rid, turns = answers[0]
            shown = turns[: a.turn] if a.turn <= len(turns) else turns
            if a.user_prompt is not None and not all(t.strip() in a.user_prompt for t in shown):
                game = "g1" if a.shown_first == 1 else "g2"
                raise located(path, a.record, f"{game}_user_prompt",
                              f"the answer of {source!r} shown to the judge differs from its stored answer")
            targets.append(rid)
        resolved.verdicts.append(_verdict_row(a, pid, targets[0], targets[1], None))
    return resolved


def _verdict_row(a: Annotation, pid: str, target_1: str, target_2: str, judge_version: str | None) -> dict[str, object]:
    rubric_version = "ingested"
    return {
        "verdict_id": verdict_id(target_1, target_2, a.judge, a.rubric, rubric_version, a.shown_first, 0),
        "prompt_id": pid, "source_1": a.source_1, "target_1": target_1, "source_2": a.source_2, "target_2": target_2,
        "judge": a.judge, "judge_version": judge_version, "rubric": a.rubric, "rubric_version": rubric_version,
        "shown_first": a.shown_first, "sample_index": 0, "raw_text": a.raw_text, "preference": a.preference,
        "status": "ok" if a.preference is not None else "unparsed", "attempts": 1, "created_at": now(),
    }


def _write(con: duckdb.DuckDBPyConnection, path: Path, kind: str, annotations: list[Annotation],
           resolved: _Resolved) -> VerdictsReport:
    stamp = now()
    report = VerdictsReport(str(path), kind, records=len({a.record for a in annotations}))
    for name in resolved.models:
        con.execute("INSERT INTO models (name, kind, note, added_at) VALUES (?, 'model', ?, ?)",
                    [name, f"registered off the matrix by `tso-data ingest verdicts {path.name}`", stamp])
    report.new_models = list(resolved.models)
    if resolved.prompts:
        con.register("_new_prompts", pa.Table.from_pylist([{**p, "language": None, "added_at": stamp}
                                                           for p in resolved.prompts]))
        report.new_prompts = insert_new(con, "prompts", "SELECT * FROM _new_prompts")
        con.unregister("_new_prompts")
    if resolved.responses:
        rows = [{**r, "sample_index": 0, "sampling": "ingested", "backend": "ingested", "prompt_tokens": None,
                 "completion_tokens": None, "finish_reason": None, "latency_s": None, "created_at": stamp}
                for r in resolved.responses]
        con.register("_new_responses", pa.Table.from_pylist(rows))
        report.new_responses = insert_new(con, "responses", "SELECT * FROM _new_responses")
        con.unregister("_new_responses")
    unique = {row["verdict_id"]: row for row in resolved.verdicts}
    if len(unique) != len(resolved.verdicts):
        raise TSODataError(f"{path}: {len(resolved.verdicts) - len(unique)} record(s) repeat the same verdict "
                           "(same answers, judge and order)")
    con.register("_new_verdicts", pa.Table.from_pylist(resolved.verdicts, schema=VERDICT_SCHEMA))
    report.new_verdicts = insert_new(con, "verdicts", "SELECT * FROM _new_verdicts")
    con.unregister("_new_verdicts")
    report.verdicts = len(resolved.verdicts)
    report.unparsed = sum(1 for row in resolved.verdicts if row["status"] != "ok")
    return report
