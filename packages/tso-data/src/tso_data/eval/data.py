"""What a leaderboard is computed from, read from the catalog in one read-only transaction:
the pointwise summary (from one score per (model, prompt), see
:mod:`tso_data.eval.pointwise`) and one preference per (model, prompt), both on one split.

Per-prompt scores (pointwise): only ``ok`` judgments of the chosen judge count (a failed
parse has no score, never a number); a judge's repeated judgments of one answer and rubric
are averaged; the rubrics are averaged with equal weights, and an answer missing one of the
chosen rubrics has no score (as in :mod:`tso_data.scoring`); a model's several answers to
one prompt (samples) are averaged, so each prompt counts once.

Per-prompt preferences (pairwise): every ``ok`` verdict of the chosen judge and pairwise
prompt between the model and the baseline, in either stored order (a verdict stored with
the model as answer 1 counts as 3 − preference), averaged per prompt — so the two orders
a judge was asked in, and any repeats, make one preference. Lengths are those of the
compared answers in characters (all turns), averaged per prompt the same way. Each
prompt's ``external_id`` comes along: the length-controlled fit takes the prompts in that
order (AlpacaEval's ``index``), as AlpacaEval takes its annotation file's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from tso_data.eval.pointwise import SUMMARY_SQL
from tso_data.eval.store import TABLE as VERDICTS
from tso_data.eval.store import has_table

# One rubric: an answer's score is the mean of its judgments. Several: the mean per rubric,
# then over rubrics, and only for answers judged on every one (the HAVING). The one-rubric
# form skips a level of grouping: it is what the leaderboard's speed target rests on.
_JUDGED = """
    FROM judgments j JOIN prompts s ON s.prompt_id = j.prompt_id AND s.split = $split
    WHERE j.judge = $judge AND j.status = 'ok' AND list_contains($rubrics, j.rubric)
      AND list_contains($models, j.source)"""
# An answer is keyed by (model, prompt, hash of its id): grouping by a 64-bit hash instead of
# 100k distinct id strings is faster, and two answers of one model to one prompt sharing a
# hash (~n²/2⁶⁴ for n samples) cannot happen in practice.
POINTWISE_ONE_RUBRIC_SQL = f"""
WITH per_target AS (
    SELECT j.source AS model, j.prompt_id, s.category, avg(j.score) AS score {_JUDGED}
    GROUP BY j.source, j.prompt_id, s.category, hash(j.target_id)),
per_prompt AS (SELECT model, prompt_id, category, avg(score) AS score FROM per_target GROUP BY ALL),
{SUMMARY_SQL}"""
POINTWISE_SQL = f"""
WITH per_rubric AS (
    SELECT j.source AS model, j.prompt_id, s.category, j.target_id, avg(j.score) AS score {_JUDGED}
    GROUP BY j.source, j.prompt_id, s.category, j.target_id, j.rubric),
per_target AS (
    SELECT model, prompt_id, category, avg(score) AS score FROM per_rubric
    GROUP BY model, prompt_id, category, target_id HAVING count(*) = len($rubrics)),
per_prompt AS (SELECT model, prompt_id, category, avg(score) AS score FROM per_target GROUP BY ALL),
{SUMMARY_SQL}"""

PREFERENCES_SQL = f"""
WITH oriented AS (
    SELECT prompt_id, source_2 AS model, target_2 AS model_target, target_1 AS base_target, preference
    FROM {VERDICTS} WHERE judge = $judge AND rubric = $rubric AND status = 'ok'
      AND source_1 = $baseline AND list_contains($models, source_2)
    UNION ALL
    SELECT prompt_id, source_1, target_1, target_2, 3.0 - preference
    FROM {VERDICTS} WHERE judge = $judge AND rubric = $rubric AND status = 'ok'
      AND source_2 = $baseline AND list_contains($models, source_1)),
used AS (SELECT model_target AS target_id FROM oriented UNION SELECT base_target FROM oriented),
lengths AS (
    SELECT response_id AS target_id, length(array_to_string(turns, '')) AS len
    FROM responses WHERE response_id IN (SELECT target_id FROM used)
    UNION ALL
    SELECT answer_id, length(array_to_string(turns, ''))
    FROM answers WHERE answer_id IN (SELECT target_id FROM used))
SELECT o.model, o.prompt_id, p.category, p.external_id, avg(o.preference) AS preference,
       avg(lm.len) AS len_model, avg(lb.len) AS len_baseline, count(*) AS n_verdicts
FROM oriented o JOIN prompts p ON p.prompt_id = o.prompt_id AND p.split = $split
LEFT JOIN lengths lm ON lm.target_id = o.model_target
LEFT JOIN lengths lb ON lb.target_id = o.base_target
GROUP BY ALL
"""

MODELS_SQL = """
SELECT name AS model, kind, family, version, version_order, size_b
FROM models WHERE list_contains($models, name)
"""

JUDGED_SOURCES_SQL = f"""
SELECT DISTINCT source FROM judgments WHERE judge = $judge AND status = 'ok'
UNION SELECT source_1 FROM {VERDICTS} WHERE judge = $judge AND status = 'ok'
UNION SELECT source_2 FROM {VERDICTS} WHERE judge = $judge AND status = 'ok'
"""


PREFERENCE_SCHEMA = {"model": pl.String, "prompt_id": pl.String, "category": pl.String, "external_id": pl.String,
                     "preference": pl.Float64,
                     "len_model": pl.Float64, "len_baseline": pl.Float64, "n_verdicts": pl.Int64}


@dataclass(frozen=True)
class Selection:
    judge: str
    models: tuple[str, ...]  # the baseline included
    split: str = "heldout"
    baseline: str | None = None
    rubrics: tuple[str, ...] = ("overall",)
    pairwise_rubric: str | None = None  # None: no pairwise columns


@dataclass(frozen=True)
class EvalData:
    models: pl.DataFrame  # model, kind, family, version, version_order, size_b
    pointwise: pl.DataFrame  # model, category, overall, n, score, score_se, n_paired, delta_mean, delta_se
    preferences: pl.DataFrame | None  # model, prompt_id, category, preference, len_model, len_baseline, n_verdicts
    split_prompts: int


def judged_sources(con: duckdb.DuckDBPyConnection, judge: str) -> list[str]:
    """Every source with an ok judgment or verdict of ``judge`` (the default model list)."""
    if not has_table(con, VERDICTS):
        rows = con.execute("SELECT DISTINCT source FROM judgments WHERE judge = ? AND status = 'ok'",
                           [judge]).fetchall()
    else:
        rows = con.execute(JUDGED_SOURCES_SQL, {"judge": judge}).fetchall()
    return sorted(r[0] for r in rows)


def load(con: duckdb.DuckDBPyConnection, selection: Selection, split_prompts: int) -> EvalData:
    """The frames of ``selection``, read through an open (read-only) connection."""
    models = list(selection.models)
    frame_models = _frame(con, MODELS_SQL, {"models": models})
    pointwise_sql = POINTWISE_ONE_RUBRIC_SQL if len(set(selection.rubrics)) == 1 else POINTWISE_SQL
    pointwise = _frame(con, pointwise_sql, {
        "judge": selection.judge, "rubrics": sorted(set(selection.rubrics)), "models": models,
        "split": selection.split, "baseline": selection.baseline})
    preferences = None
    if selection.pairwise_rubric is not None and selection.baseline is not None:
        if has_table(con, VERDICTS):
            preferences = _frame(con, PREFERENCES_SQL, {
                "judge": selection.judge, "rubric": selection.pairwise_rubric, "baseline": selection.baseline,
                "models": models, "split": selection.split})
        else:
            preferences = pl.DataFrame(schema=PREFERENCE_SCHEMA)
    return EvalData(frame_models, pointwise, preferences, split_prompts)


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object]) -> pl.DataFrame:
    return pl.from_arrow(con.sql(sql, params=params).to_arrow_table())  # type: ignore[return-value]
