"""Judge runs: plan the judgments still owed, build judge prompts, call a model, parse, store.
Python-function judges are in :mod:`tso_data.judge.function_judge`, re-parsing stored texts in
:mod:`tso_data.judge.reparse`.

Storage follows the worker rule of the catalog: rows go to atomic Parquet shards of the
``judgments`` table and are merged with *replace* (a retry's row replaces the failed one).
A run is resumable: judgments already ``ok`` are skipped; ``unparsed`` and ``error`` ones are
retried until they have used ``max_attempts`` attempts in total (a rerun continues the count).
An unparsable judge text is stored with status ``unparsed`` and a NULL score, never a number.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.generate.backend import Backend, Request, Result, SamplingParams
from tso_data.ids import judgment_id
from tso_data.judge.conversation import question_and_answer
from tso_data.judge.parsing import parse_score
from tso_data.judge.rounds import ask_in_rounds
from tso_data.judge.rubrics import Rubric
from tso_data.redact import redact, strip_secrets
from tso_data.shards import merge_shards, write_shard

JUDGMENT_SCHEMA = pa.schema(
    [
        ("judgment_id", pa.string()),
        ("target_id", pa.string()),
        ("target_kind", pa.string()),
        ("prompt_id", pa.string()),
        ("source", pa.string()),
        ("judge", pa.string()),
        ("judge_version", pa.string()),
        ("rubric", pa.string()),
        ("rubric_version", pa.string()),
        ("sample_index", pa.int32()),
        ("raw_text", pa.string()),
        ("score", pa.float64()),
        ("status", pa.string()),
        ("attempts", pa.int32()),
        ("scale_min", pa.float64()),
        ("scale_max", pa.float64()),
        ("created_at", pa.timestamp("us")),
    ]
)


@dataclass
class Item:
    """One judgment to make: a target, a rubric, a sample index."""

    judgment_id: str
    target_id: str
    target_kind: str
    prompt_id: str
    source: str
    rubric: Rubric
    sample_index: int
    prompt_messages: list[dict[str, str]]
    turns: list[str]
    reference: list[str] | None
    attempts: int = 0  # used so far, earlier runs included


@dataclass
class JudgeSummary:
    judge: str
    planned: int = 0
    already_ok: int = 0
    exhausted: int = 0  # not ok, out of attempts before this run started
    statuses: Counter[str] = field(default_factory=Counter)  # final status of rows written now
    calls: int = 0
    unparsed_reasons: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "judge": self.judge,
            "planned": self.planned,
            "already_ok": self.already_ok,
            "exhausted_before_run": self.exhausted,
            "written": dict(self.statuses),
            "calls": self.calls,
            "unparsed_reasons": dict(self.unparsed_reasons.most_common(5)),
            "errors": dict(self.errors.most_common(5)),
        }


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def plan_items(
    catalog: Catalog,
    targets: pa.Table,
    rubrics: list[Rubric],
    judge: str,
    *,
    samples: int,
    max_attempts: int,
    summary: JudgeSummary,
) -> list[Item]:
    """The judgments still to make (new, or failed with attempts left), in a stable order."""
    if samples < 1:
        raise TSODataError("--samples must be >= 1")
    if max_attempts < 1:
        raise TSODataError("--max-attempts must be >= 1")
    merge_shards(catalog, "judgments", replace=True)  # rows of an interrupted run
    existing = {
        row["judgment_id"]: (row["status"], row["attempts"])
        for row in catalog.arrow(
            "SELECT judgment_id, status, attempts FROM judgments WHERE judge = ?", [judge]
        ).to_pylist()
    }
    items: list[Item] = []
    for row in targets.to_pylist():
        prompt_messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        for rubric in rubrics:
            for sample_index in range(samples):
                jid = judgment_id(row["target_id"], judge, rubric.name, rubric.version, str(sample_index))
                summary.planned += 1
                status, attempts = existing.get(jid, (None, 0))
                if status == "ok":
                    summary.already_ok += 1
                    continue
                if attempts >= max_attempts:
                    summary.exhausted += 1
                    continue
                items.append(
                    Item(
                        judgment_id=jid,
                        target_id=row["target_id"],
                        target_kind=row["target_kind"],
                        prompt_id=row["prompt_id"],
                        source=row["source"],
                        rubric=rubric,
                        sample_index=sample_index,
                        prompt_messages=prompt_messages,
                        turns=list(row["turns"]),
                        reference=list(row["reference"]) if row.get("reference") is not None else None,
                        attempts=attempts,
                    )
                )
    return items


def judge_messages(item: Item) -> list[dict[str, str]]:
    question, answer = question_and_answer(item.prompt_messages, item.turns)
    reference = None
    if item.reference:
        reference = question_and_answer(item.prompt_messages, item.reference)[1]
    return item.rubric.render(question, answer, reference)


def judgment_row(item: Item, judge: str, judge_version: str | None, raw: str | None, score: float | None,
                 status: str) -> dict[str, object]:
    """The ``judgments`` row of one attempt at ``item``."""
    return {
        "judgment_id": item.judgment_id,
        "target_id": item.target_id,
        "target_kind": item.target_kind,
        "prompt_id": item.prompt_id,
        "source": item.source,
        "judge": judge,
        "judge_version": judge_version,
        "rubric": item.rubric.name,
        "rubric_version": item.rubric.version,
        "sample_index": item.sample_index,
        "raw_text": raw,
        "score": score if status == "ok" else None,
        "status": status,
        "attempts": item.attempts,
        "scale_min": item.rubric.scale_min,
        "scale_max": item.rubric.scale_max,
        "created_at": _now(),
    }


def _attempt_seed(judgment_id_: str, attempt: int, base_seed: int | None) -> int:
    """Distinct, reproducible seed per judgment and attempt (a retry must not repeat itself)."""
    return (int(judgment_id_[:8], 16) + 7919 * attempt + (base_seed or 0)) % (2**31 - 1)


def run_model_judge(
    catalog: Catalog,
    items: list[Item],
    backend: Backend,
    *,
    judge: str,
    judge_version: str | None,
    params: SamplingParams,
    max_attempts: int,
    summary: JudgeSummary,
    progress: bool = True,
    flush_every: int = 256,
    flush_seconds: float = 30.0,
) -> JudgeSummary:
    """Judge ``items`` through the generation runner (the loop `tso-data generate` uses:
    the backend's concurrency and rate limits, periodic flushes, progress).

    Each round sends every pending judgment once; a reply that does not parse (or a failed
    call) is stored as such and re-sampled in the next round with a new seed, until it
    parses or has used ``max_attempts``. Rows reach the catalog as shards at every flush,
    so an interrupted run loses at most one flush interval; the next run merges them.
    """
    def record(item: Item, result: Result | None) -> tuple[dict[str, object], str]:
        item.attempts += 1
        if result is None:
            return judgment_row(item, judge, judge_version, "backend returned no result", None, "error"), "error"
        summary.calls += 1
        if not result.ok:
            message = redact(result.error or "backend returned no text")
            summary.errors[message.splitlines()[0][:200]] += 1
            return judgment_row(item, judge, judge_version, message, None, "error"), "error"
        parsed = parse_score(result.text, item.rubric.scale_min, item.rubric.scale_max)
        if parsed.status != "ok":
            summary.unparsed_reasons[parsed.reason] += 1
        row = judgment_row(item, judge, judge_version, strip_secrets(result.text), parsed.score, parsed.status)
        return row, parsed.status

    def request_of(item: Item) -> Request:
        seed = _attempt_seed(item.judgment_id, item.attempts, params.seed)
        return Request(key=item.judgment_id, messages=judge_messages(item), sample_index=item.sample_index,
                       params=SamplingParams(params.temperature, params.top_p, params.max_tokens, seed))

    def write(rows: list[dict[str, object]]) -> None:
        write_shard(catalog, "judgments", pa.Table.from_pylist(rows, schema=JUDGMENT_SCHEMA))

    try:
        final = ask_in_rounds(
            backend, {item.judgment_id: item for item in items}, request_of=request_of, record=record, write=write,
            max_attempts=max_attempts, label=f"judging with {judge}", progress=progress, flush_every=flush_every,
            flush_seconds=flush_seconds,
        )
    finally:
        merge_shards(catalog, "judgments", replace=True)
    summary.statuses.update(final.values())
    return summary
