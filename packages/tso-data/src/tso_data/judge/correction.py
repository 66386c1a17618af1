"""Evaluation correction (paper §3.2, Appendix D.2): feedback rows -> a judge-SFT set;
judge agreement with held-out feedback to show whether the corrected judge got better.

Workflow: ``ingest feedback`` -> ``export judge-sft`` -> ``tso-train sft`` -> ``judge`` with the
corrected judge -> ``judge-agreement --judge OLD --judge NEW --against feedback``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.judge.conversation import question_and_answer
from tso_data.judge.metrics import mae, pairwise_accuracy, pearson, spearman
from tso_data.judge.rubrics import Rubric
from tso_data.judge.targets import TARGETS_SQL
from tso_data.shards import merge_shards, write_atomic_parquet

MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
JUDGE_SFT_SCHEMA = pa.schema(
    [
        ("messages", MESSAGE_TYPE),
        ("feedback_id", pa.string()),
        ("target_id", pa.string()),
        ("prompt_id", pa.string()),
        ("rubric", pa.string()),
        ("rubric_version", pa.string()),
        ("score", pa.float64()),
        ("annotator", pa.string()),
    ]
)


def _fmt(x: float) -> str:
    return f"{x:g}"


def sft_completion(rationale: str | None, score: float) -> str:
    """The assistant turn a corrected judge should produce: rationale, then the score line.

    >>> sft_completion("Correct and short.", 9.0)
    'Correct and short.\\n\\nScore: 9'
    >>> sft_completion(None, 7.5)
    'Score: 7.5'
    """
    text = (rationale or "").strip()
    return f"{text}\n\nScore: {_fmt(score)}" if text else f"Score: {_fmt(score)}"


def export_judge_sft(
    catalog: Catalog,
    out: Path,
    rubrics: dict[str, Rubric],
    *,
    only: Sequence[str] = (),
    reference_source: str | None = None,
) -> int:
    """Write the train-split feedback as judge-SFT conversations (system, user, assistant)
    to ``out`` atomically; returns the number of rows. ``rubrics``: every known rubric."""
    rows = _train_feedback(catalog, only, reference_source)
    _check_feedback(catalog, rows, rubrics)
    out_rows = [_sft_row(r, rubrics[r["rubric"]]) for r in rows]
    table = pa.Table.from_pylist(out_rows, schema=JUDGE_SFT_SCHEMA).replace_schema_metadata(
        {"tso.kind": "judge-sft", "tso.rubrics": json.dumps(sorted({r["rubric"] for r in out_rows}))}
    )
    write_atomic_parquet(table, Path(out))
    return table.num_rows


def _train_feedback(catalog: Catalog, only: Sequence[str], reference_source: str | None) -> list[dict]:
    """The train-split feedback rows with the judged conversation (and the reference answer)."""
    params: list[object] = []
    rubric_filter = ""
    if only:
        rubric_filter = f"AND f.rubric IN ({', '.join('?' for _ in only)})"
        params.extend(only)
    ref_join, ref_col = "", "CAST(NULL AS VARCHAR[]) AS reference"
    if reference_source is not None:
        ref_join = (
            "LEFT JOIN (SELECT prompt_id, arg_min(turns, answer_id) AS reference FROM answers "
            "WHERE source = ? GROUP BY prompt_id) ref ON ref.prompt_id = f.prompt_id"
        )
        ref_col = "ref.reference"
        params.insert(0, reference_source)
    return catalog.arrow(
        f"SELECT f.feedback_id, f.target_id, f.prompt_id, f.rubric, f.score, f.rationale, f.annotator, "
        f"t.messages, t.turns, {ref_col} FROM feedback f "
        f"LEFT JOIN ({TARGETS_SQL}) t ON t.target_id = f.target_id {ref_join} "
        f"WHERE f.split = 'train' {rubric_filter} ORDER BY f.feedback_id",
        params,
    ).to_pylist()


def _check_feedback(catalog: Catalog, rows: list[dict], rubrics: dict[str, Rubric]) -> None:
    """Every row exports: there are rows, their rubrics are defined, their targets exist and
    their scores lie on their rubric's scale."""
    if not rows:
        raise TSODataError("no train-split feedback to export; add some with `tso-data ingest feedback`")
    unknown = sorted({r["rubric"] for r in rows} - set(rubrics))
    if unknown:
        raise TSODataError(
            f"feedback uses rubric(s) {', '.join(unknown)} that are not defined; add their TOML to "
            f"{catalog.root / 'rubrics'} (known: {', '.join(sorted(rubrics))})"
        )
    orphans = [r["feedback_id"] for r in rows if r["turns"] is None]
    if orphans:
        raise TSODataError(
            f"{len(orphans)} feedback row(s) point at a response/answer that is not in the catalog "
            f"(first feedback_id {orphans[0]})"
        )
    for r in rows:
        rubric = rubrics[r["rubric"]]
        if not rubric.scale_min <= r["score"] <= rubric.scale_max:
            raise TSODataError(
                f"feedback {r['feedback_id']}: field 'score': {r['score']:g} is outside the scale "
                f"of rubric {rubric.name!r}: {rubric.scale_min:g}-{rubric.scale_max:g} ({rubric.source})"
            )


def _sft_row(r: dict, rubric: Rubric) -> dict[str, object]:
    """One feedback row as a judge-SFT conversation: the rubric's prompt, then the corrected verdict."""
    prompt_messages = [{"role": m["role"], "content": m["content"]} for m in r["messages"]]
    question, answer = question_and_answer(prompt_messages, list(r["turns"]))
    reference = question_and_answer(prompt_messages, list(r["reference"]))[1] if r["reference"] else None
    messages = rubric.render(question, answer, reference)
    messages.append({"role": "assistant", "content": sft_completion(r["rationale"], r["score"])})
    return {
        "messages": messages,
        "feedback_id": r["feedback_id"],
        "target_id": r["target_id"],
        "prompt_id": r["prompt_id"],
        "rubric": rubric.name,
        "rubric_version": rubric.version,
        "score": r["score"],
        "annotator": r["annotator"],
    }

@dataclass(frozen=True)
class Agreement:
    judge: str
    n: int
    n_missing: int  # held-out feedback items this judge has no ok score for
    pearson: float | None
    spearman: float | None
    mae: float | None
    pairwise_accuracy: float | None
    n_pairs: int

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def judge_agreement(
    catalog: Catalog, judges: Sequence[str], *, rubrics: Sequence[str] = (), split: str = "heldout"
) -> list[Agreement]:
    """Agreement of each judge with the feedback scores of ``split``.

    Per (target, rubric): the mean of the judge's ok samples vs the mean of the feedback
    scores. With several judges every metric is computed on the items all of them scored,
    so the numbers compare like with like; ``n_missing`` says what each judge lacked.
    Pairwise accuracy pairs answers to the same prompt and rubric.
    """
    if not judges:
        raise TSODataError("name at least one --judge")
    merge_shards(catalog, "judgments", replace=True)
    params: list[object] = [split]
    rubric_filter = ""
    if rubrics:
        rubric_filter = f"AND rubric IN ({', '.join('?' for _ in rubrics)})"
        params.extend(rubrics)
    feedback = catalog.arrow(
        f"SELECT target_id, rubric, any_value(prompt_id) AS prompt_id, avg(score) AS ref FROM feedback "
        f"WHERE split = ? {rubric_filter} GROUP BY target_id, rubric ORDER BY target_id, rubric",
        params,
    ).to_pylist()
    if not feedback:
        raise TSODataError(f"no feedback with split '{split}' to compare against")
    scores: dict[str, dict[tuple[str, str], float]] = {}
    for judge in judges:
        rows = catalog.arrow(
            "SELECT target_id, rubric, avg(score) AS score FROM judgments "
            "WHERE judge = ? AND status = 'ok' GROUP BY target_id, rubric",
            [judge],
        ).to_pylist()
        if not rows:
            raise TSODataError(f"judge {judge!r} has no ok judgments; run `tso-data judge --judge {judge}` first")
        scores[judge] = {(r["target_id"], r["rubric"]): r["score"] for r in rows}
    keys = [(f["target_id"], f["rubric"]) for f in feedback]
    common = [i for i, k in enumerate(keys) if all(k in scores[j] for j in judges)]
    ref = [feedback[i]["ref"] for i in common]
    groups = [(feedback[i]["prompt_id"], feedback[i]["rubric"]) for i in common]
    results = []
    for judge in judges:
        pred = [scores[judge][keys[i]] for i in common]
        acc, n_pairs = pairwise_accuracy(pred, ref, groups)
        results.append(
            Agreement(
                judge=judge,
                n=len(common),
                n_missing=sum(1 for k in keys if k not in scores[judge]),
                pearson=pearson(pred, ref),
                spearman=spearman(pred, ref),
                mae=mae(pred, ref),
                pairwise_accuracy=acc,
                n_pairs=n_pairs,
            )
        )
    return results
