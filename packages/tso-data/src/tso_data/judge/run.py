"""Judge runs: build judge prompts, call a model (or a Python function), parse, store.

Storage follows the worker rule of the catalog: rows go to atomic Parquet shards of the
``judgments`` table and are merged with *replace* (a retry's row replaces the failed one).
A run is resumable: judgments already ``ok`` are skipped; ``unparsed`` and ``error`` ones are
retried until they have used ``max_attempts`` attempts in total (a rerun continues the count).
An unparsable judge text is stored with status ``unparsed`` and a NULL score, never a number.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.generate.backend import Backend, Request, Result, SamplingParams
from tso_data.ids import content_hash, judgment_id
from tso_data.judge.conversation import question_and_answer
from tso_data.judge.parsing import parse_score
from tso_data.judge.rounds import ask_in_rounds
from tso_data.judge.rubrics import Rubric
from tso_data.redact import redact, strip_secrets
from tso_data.shards import merge_shards, write_shard

FUNCTION_PREFIX = "fn:"

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


def _row(item: Item, judge: str, judge_version: str | None, raw: str | None, score: float | None, status: str) -> dict[str, object]:
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


class _ShardWriter:
    """Buffers judgment rows and flushes them as atomic shards."""

    def __init__(self, catalog: Catalog, flush_every: int) -> None:
        self.catalog = catalog
        self.flush_every = max(1, flush_every)
        self.rows: list[dict[str, object]] = []

    def add(self, row: dict[str, object]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            write_shard(self.catalog, "judgments", pa.Table.from_pylist(self.rows, schema=JUDGMENT_SCHEMA))
            self.rows = []


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
            return _row(item, judge, judge_version, "backend returned no result", None, "error"), "error"
        summary.calls += 1
        if not result.ok:
            message = redact(result.error or "backend returned no text")
            summary.errors[message.splitlines()[0][:200]] += 1
            return _row(item, judge, judge_version, message, None, "error"), "error"
        parsed = parse_score(result.text, item.rubric.scale_min, item.rubric.scale_max)
        if parsed.status != "ok":
            summary.unparsed_reasons[parsed.reason] += 1
        return _row(item, judge, judge_version, strip_secrets(result.text), parsed.score, parsed.status), parsed.status

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


# -- function judges ---------------------------------------------------------------------

JudgeFunction = Callable[[list[dict[str, str]], list[str], "list[str] | None"], object]


def load_function_judge(spec: str) -> tuple[JudgeFunction, str | None]:
    """``fn:module:function`` -> (callable, version).

    The version is the module's ``__version__`` if it has one, else a hash of the
    function's source, so a changed function is visible in the stored rows.
    """
    body = spec[len(FUNCTION_PREFIX):] if spec.startswith(FUNCTION_PREFIX) else spec
    module_name, _, func_name = body.rpartition(":")
    if not module_name or not func_name:
        raise TSODataError(f"--judge {spec!r}: expected fn:module:function, e.g. fn:my_pkg.verifiers:exact_match")
    if os.getcwd() not in sys.path:  # let users point at a module in the current directory
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise TSODataError(f"--judge {spec!r}: cannot import module {module_name!r}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise TSODataError(f"--judge {spec!r}: module {module_name!r} has no callable {func_name!r}")
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            version = "src:" + content_hash("fn", inspect.getsource(func))
        except (OSError, TypeError):
            version = None
    return func, None if version is None else str(version)


def _function_outcome(value: object, rubric: Rubric) -> tuple[float | None, str | None, str]:
    """(score, raw_text, status) from a function judge's return value."""
    rationale: str | None = None
    if isinstance(value, tuple):
        if len(value) != 2:
            return None, f"returned a tuple of {len(value)} items; expected (score, rationale)", "error"
        value, rationale_obj = value
        rationale = None if rationale_obj is None else str(rationale_obj)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"returned {type(value).__name__} {value!r}; expected a number", "error"
    score = float(value)
    if not math.isfinite(score):
        return None, f"returned {score!r}; expected a finite number", "error"
    if not rubric.scale_min <= score <= rubric.scale_max:
        return None, (
            f"returned {score:g}, outside the scale of rubric {rubric.name!r}: "
            f"{rubric.scale_min:g}-{rubric.scale_max:g}"
        ), "error"
    return score, rationale, "ok"


def run_function_judge(
    catalog: Catalog,
    items: list[Item],
    func: JudgeFunction,
    *,
    judge: str,
    judge_version: str | None,
    summary: JudgeSummary,
    on_result: Callable[[], None] | None = None,
    flush_every: int = 1024,
) -> JudgeSummary:
    """Score ``items`` with a Python callable ``(prompt_messages, answer_turns, reference)``.

    A function that raises gives status ``error`` with the exception in ``raw_text``.
    """
    writer = _ShardWriter(catalog, flush_every)
    try:
        for item in items:
            item.attempts += 1
            summary.calls += 1
            try:
                value = func([dict(m) for m in item.prompt_messages], list(item.turns), item.reference)
            except Exception as exc:  # a user's function: any failure is that row's error
                message = redact(f"{type(exc).__name__}: {exc}")
                score, raw, status = None, message, "error"
            else:
                score, raw, status = _function_outcome(value, item.rubric)
            if status == "error":
                summary.errors[(raw or "")[:200]] += 1
            summary.statuses[status] += 1
            writer.add(_row(item, judge, judge_version, raw, score, status))
            if on_result is not None:
                on_result()
    finally:
        writer.flush()
        merge_shards(catalog, "judgments", replace=True)
    return summary


# -- re-parsing --------------------------------------------------------------------------


def reparse(catalog: Catalog, *, judge: str | None = None, rubrics: Iterable[str] = ()) -> Counter[str]:
    """Re-parse stored raw judge texts with the current parser; no model is called.

    Touches rows of model judges with status ``ok`` or ``unparsed`` (``error`` rows hold an
    error message, function judges have no text to parse). Returns transitions such as
    ``{'unparsed->ok': 3, 'ok->ok': 10}``; rows whose score changed count as ``changed``.
    """
    merge_shards(catalog, "judgments", replace=True)
    conditions = ["status IN ('ok', 'unparsed')", f"judge NOT LIKE '{FUNCTION_PREFIX}%'"]
    params: list[object] = []
    if judge is not None:
        conditions.append("judge = ?")
        params.append(judge)
    rubric_list = list(rubrics)
    if rubric_list:
        conditions.append(f"rubric IN ({', '.join('?' for _ in rubric_list)})")
        params.extend(rubric_list)
    where = " AND ".join(conditions)
    transitions: Counter[str] = Counter()
    with catalog.connect(read_only=False) as con:
        rows = con.sql(
            f"SELECT judgment_id, raw_text, score, status, scale_min, scale_max FROM judgments WHERE {where}",
            params=params or None,
        ).to_arrow_table()
        ids = rows.column("judgment_id").to_pylist()
        texts = rows.column("raw_text").to_pylist()
        old_scores = rows.column("score").to_pylist()
        old_status = rows.column("status").to_pylist()
        lows = rows.column("scale_min").to_pylist()
        highs = rows.column("scale_max").to_pylist()
        new_scores: list[float | None] = []
        new_status: list[str] = []
        for text, lo, hi, before, before_score in zip(texts, lows, highs, old_status, old_scores):
            if lo is None or hi is None:
                parsed_score, parsed_status = None, "unparsed"
            else:
                p = parse_score(text, lo, hi)
                parsed_score, parsed_status = p.score, p.status
            new_scores.append(parsed_score)
            new_status.append(parsed_status)
            key = f"{before}->{parsed_status}"
            if before == parsed_status == "ok" and before_score != parsed_score:
                key = "ok->ok (score changed)"
            transitions[key] += 1
        update = pa.table(
            {"judgment_id": ids, "new_score": pa.array(new_scores, pa.float64()), "new_status": new_status}
        )
        con.register("_reparsed", update)
        con.execute(
            "UPDATE judgments SET score = u.new_score, status = u.new_status "
            "FROM _reparsed u WHERE judgments.judgment_id = u.judgment_id "
            "AND (judgments.status IS DISTINCT FROM u.new_status OR judgments.score IS DISTINCT FROM u.new_score)"
        )
        con.unregister("_reparsed")
    return transitions

