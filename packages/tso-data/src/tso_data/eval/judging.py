"""Pairwise judging: the judge compares a model's answer with the baseline's on the same
prompt, once with each shown first (position bias cancels in the average), and its
verdict becomes a row of `verdicts`.

It runs on the judge model's own generation backend through the request loop of
`tso-data generate` (:func:`tso_data.generate.runner.run_requests`: concurrency, rate
limits, periodic flushes), and follows the judge's storage rules: rows go to atomic shards
merged with replace; a reply without a valid verdict is stored ``unparsed`` (raw text
kept, preference NULL, never a number) and asked again with a new seed until
``max_attempts`` attempts in total, counting earlier runs; ``ok`` verdicts are never asked
again; :func:`reparse` re-reads the stored texts with the current parser and calls nothing.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError, located
from tso_data.eval.store import merge_verdicts, now, write_verdicts
from tso_data.eval.verdicts import parse_verdict, preference_of
from tso_data.generate.backend import Backend, Request, Result, SamplingParams
from tso_data.ids import content_hash, verdict_id
from tso_data.judge.conversation import question_and_answer
from tso_data.judge.rounds import ask_in_rounds
from tso_data.judge.run import JudgeSummary

SHIPPED_PROMPT = Path(__file__).with_name("pairwise_prompt.toml")
SLOTS = ("{question}", "{answer_a}", "{answer_b}")


@dataclass(frozen=True)
class PairwisePrompt:
    name: str
    version: str
    system: str
    user: str

    def render(self, question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
        values = {"question": question, "answer_a": answer_a, "answer_b": answer_b}
        return [{"role": "system", "content": self.system.format_map(values)},
                {"role": "user", "content": self.user.format_map(values)}]


def load_pairwise_prompt(path: Path | None = None) -> PairwisePrompt:
    """The shipped prompt, or a TOML file of the same shape (``name``, ``version``,
    ``[prompt] system / user`` with the slots ``{question}``, ``{answer_a}``, ``{answer_b}``)."""
    path = path or SHIPPED_PROMPT
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise located(path, None, None, "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise located(path, None, None, f"not valid TOML: {exc}") from None
    prompt = data.get("prompt", {})
    for key, value in (("name", data.get("name")), ("version", data.get("version")),
                       ("prompt.system", prompt.get("system")), ("prompt.user", prompt.get("user"))):
        if not isinstance(value, str) or not value.strip():
            raise located(path, None, key, "expected a non-empty string")
    missing = [slot for slot in SLOTS if slot not in prompt["system"] + prompt["user"]]
    if missing:
        raise located(path, None, "prompt.user", f"missing slot(s) {', '.join(missing)}")
    return PairwisePrompt(data["name"], str(data["version"]), prompt["system"], prompt["user"])


@dataclass
class PairItem:
    """One verdict to ask for: answer 1 (the baseline) and answer 2, shown in one order."""

    verdict_id: str
    prompt_id: str
    source_1: str
    target_1: str
    source_2: str
    target_2: str
    shown_first: int
    messages: list[dict[str, str]]
    turns_1: list[str]
    turns_2: list[str]
    attempts: int = 0


PAIRS_SQL = """
WITH texts AS (
    SELECT model AS source, prompt_id, response_id AS target_id, sample_index AS k, turns FROM responses
    UNION ALL SELECT source, prompt_id, answer_id, 0, turns FROM answers),
firsts AS (
    SELECT source, prompt_id, arg_min(target_id, (k, target_id)) AS target_id, arg_min(turns, (k, target_id)) AS turns
    FROM texts WHERE list_contains($sources, source)
      AND prompt_id IN (SELECT prompt_id FROM prompts WHERE split = $split)
    GROUP BY source, prompt_id)
SELECT m.prompt_id, p.messages, b.source AS source_1, b.target_id AS target_1, b.turns AS turns_1,
       m.source AS source_2, m.target_id AS target_2, m.turns AS turns_2
FROM firsts m JOIN firsts b ON b.prompt_id = m.prompt_id AND b.source = $baseline
JOIN prompts p ON p.prompt_id = m.prompt_id
WHERE m.source <> $baseline
ORDER BY m.source, m.prompt_id
"""


def plan_pairs(catalog: Catalog, models: Sequence[str], baseline: str, split: str, judge: str,
               prompt: PairwisePrompt, max_attempts: int, summary: JudgeSummary) -> list[PairItem]:
    """The verdicts still to ask for: each model's first answer (lowest sample index) against
    the baseline's first answer, on every prompt of the split both answered, in both orders."""
    merge_verdicts(catalog)
    sources = sorted(set(models) | {baseline})
    with catalog.connect(read_only=True) as con:
        rows = con.sql(PAIRS_SQL, params={"sources": sources, "split": split, "baseline": baseline}).to_arrow_table()
        existing = {vid: (status, attempts) for vid, status, attempts in con.execute(
            "SELECT verdict_id, status, attempts FROM verdicts WHERE judge = ? AND rubric = ?",
            [judge, prompt.name]).fetchall()}
    items = []
    for row in rows.to_pylist():
        for shown_first in (1, 2):
            vid = verdict_id(row["target_1"], row["target_2"], judge, prompt.name, prompt.version, shown_first, 0)
            summary.planned += 1
            status, attempts = existing.get(vid, (None, 0))
            if status == "ok":
                summary.already_ok += 1
            elif attempts >= max_attempts:
                summary.exhausted += 1
            else:
                items.append(PairItem(vid, row["prompt_id"], row["source_1"], row["target_1"], row["source_2"],
                                      row["target_2"], shown_first, [dict(m) for m in row["messages"]],
                                      list(row["turns_1"]), list(row["turns_2"]), attempts))
    return items


def pair_messages(item: PairItem, prompt: PairwisePrompt) -> list[dict[str, str]]:
    """The judge conversation: the request and both answers, answer ``shown_first`` as A.
    For a multi-turn prompt the request lists the user turns and each answer is its whole
    sequence of replies."""
    if len(item.turns_1) == 1 and len(item.turns_2) == 1:
        question = question_and_answer(item.messages, item.turns_1)[0]
        answer_1, answer_2 = item.turns_1[0], item.turns_2[0]
    else:
        users = [m["content"] for m in item.messages if m["role"] == "user"]
        question = "\n\n".join(f"[User, turn {i}]\n{text}" for i, text in enumerate(users, start=1))
        answer_1, answer_2 = _transcript(item.turns_1), _transcript(item.turns_2)
    first, second = (answer_1, answer_2) if item.shown_first == 1 else (answer_2, answer_1)
    return prompt.render(question, first, second)


def _transcript(turns: list[str]) -> str:
    return "\n\n".join(f"[Reply to turn {i}]\n{text}" for i, text in enumerate(turns, start=1))


def _row(item: PairItem, judge: str, judge_version: str | None, prompt: PairwisePrompt, raw: str | None,
         preference: float | None, status: str) -> dict[str, object]:
    return {"verdict_id": item.verdict_id, "prompt_id": item.prompt_id, "source_1": item.source_1,
            "target_1": item.target_1, "source_2": item.source_2, "target_2": item.target_2, "judge": judge,
            "judge_version": judge_version, "rubric": prompt.name, "rubric_version": prompt.version,
            "shown_first": item.shown_first, "sample_index": 0, "raw_text": raw,
            "preference": preference if status == "ok" else None, "status": status,
            "attempts": item.attempts, "created_at": now()}


def _seed(item: PairItem, base: int | None) -> int:
    return int(content_hash("verdict-seed", item.verdict_id, str(item.attempts), str(base or 0)), 16) % (2**31 - 1)


def run_pairwise(catalog: Catalog, items: list[PairItem], backend: Backend, *, judge: str, judge_version: str | None,
                 prompt: PairwisePrompt, params: SamplingParams, max_attempts: int, summary: JudgeSummary,
                 progress: bool = True, flush_every: int = 256, flush_seconds: float = 30.0) -> JudgeSummary:
    """Ask for every verdict of ``items``; unparsed and failed ones again, in rounds."""
    def record(item: PairItem, result: Result | None) -> tuple[dict[str, object], str]:
        return _judge_result(item, result, judge, judge_version, prompt, summary)

    def request_of(item: PairItem) -> Request:
        return Request(key=item.verdict_id, messages=pair_messages(item, prompt),
                       params=SamplingParams(params.temperature, params.top_p, params.max_tokens,
                                             _seed(item, params.seed)))

    try:
        final = ask_in_rounds(
            backend, {item.verdict_id: item for item in items}, request_of=request_of, record=record,
            write=lambda rows: write_verdicts(catalog, rows), max_attempts=max_attempts, label=f"pairwise with {judge}",
            progress=progress, flush_every=flush_every, flush_seconds=flush_seconds,
        )
    finally:
        merge_verdicts(catalog)
    summary.statuses.update(final.values())
    return summary


def _judge_result(item: PairItem, result: Result | None, judge: str, judge_version: str | None,
                  prompt: PairwisePrompt, summary: JudgeSummary) -> tuple[dict[str, object], str]:
    """The verdict row of one attempt and its status (``result`` None: the backend returned nothing)."""
    item.attempts += 1
    if result is None:
        return _row(item, judge, judge_version, prompt, "backend returned no result", None, "error"), "error"
    summary.calls += 1
    if not result.ok:
        message = result.error or "backend returned no text"
        summary.errors[message.splitlines()[0][:200]] += 1
        return _row(item, judge, judge_version, prompt, message, None, "error"), "error"
    parsed = parse_verdict(result.text)
    if parsed.status != "ok" or parsed.winner is None:
        summary.unparsed_reasons[parsed.reason] += 1
        return _row(item, judge, judge_version, prompt, result.text, None, "unparsed"), "unparsed"
    preference = preference_of(parsed.winner, item.shown_first)
    return _row(item, judge, judge_version, prompt, result.text, preference, "ok"), "ok"


def reparse(catalog: Catalog, judge: str, rubric: str = "pairwise") -> Counter[str]:
    """Re-parse the stored texts of a judge's (non-ingested) verdicts; calls no model.
    Returns transitions such as ``{'unparsed->ok': 3, 'ok->ok': 10}``."""
    merge_verdicts(catalog)
    transitions: Counter[str] = Counter()
    with catalog.connect(read_only=False) as con:
        rows = con.execute(
            "SELECT verdict_id, shown_first, raw_text, status, preference FROM verdicts "
            "WHERE judge = ? AND rubric = ? AND shown_first IS NOT NULL "
            "AND rubric_version <> 'ingested' AND status IN ('ok', 'unparsed')", [judge, rubric]).fetchall()
        for verdict, shown_first, raw, before, old in rows:
            parsed = parse_verdict(raw)
            preference = preference_of(parsed.winner, shown_first) if parsed.winner is not None else None
            after = "ok" if preference is not None else "unparsed"
            changed = after == before == "ok" and old != preference
            transitions[f"{before}->{after}" + (" (changed)" if changed else "")] += 1
            if after != before or preference != old:
                con.execute("UPDATE verdicts SET status = ?, preference = ? WHERE verdict_id = ?",
                            [after, preference, verdict])
    if not transitions:
        raise TSODataError(f"no verdicts of judge {judge!r} with prompt {rubric!r} to re-parse")
    return transitions
