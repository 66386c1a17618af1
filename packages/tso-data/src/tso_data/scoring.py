"""From judgments to one score per target (the threshold τ that splits the base model's
answers by these scores is :mod:`tso_data.pairs.tau`). Pure functions over Polars frames.

Aggregation, in order:

1. only judgments with ``status = 'ok'`` count (a failed parse has no score, never a number);
2. optionally only one judge (:func:`select_judge`: several judges and none chosen is an error);
3. repeated judgments of the same target and rubric are averaged;
4. the rubric means are combined by a weighted mean (weights configurable, default equal
   over the rubrics present). A target missing a dimension that has a non-zero weight has
   **no score** (it is left out rather than scored on a partial rubric).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from tso_data.errors import TSODataError


def select_judge(judgments: pl.DataFrame, judge: str | None) -> pl.DataFrame:
    """Keep one judge's judgments. With ``judge=None`` the frame must hold at most one judge.

    >>> j = pl.DataFrame({"judge": ["a", "b"], "score": [1.0, 2.0]})
    >>> select_judge(j, "b")["score"].to_list()
    [2.0]
    >>> select_judge(j, None)  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: judgments come from several judges (a, b): choose one with --judge
    (or `judge` in round.toml)
    >>> select_judge(j, "c")
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: judge 'c' has no judgments (known: a, b)
    """
    judges = sorted(judgments.get_column("judge").unique().drop_nulls().to_list())
    if judge is None:
        if len(judges) > 1:
            raise TSODataError(
                f"judgments come from several judges ({', '.join(judges)}): choose one with "
                "--judge (or `judge` in round.toml)"
            )
        return judgments
    if judge not in judges:
        raise TSODataError(f"judge {judge!r} has no judgments (known: {', '.join(judges) or 'none'})")
    return judgments.filter(pl.col("judge") == judge)


def aggregate_scores(
    judgments: pl.DataFrame,
    *,
    judge: str | None = None,
    rubric_weights: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """One score per target: columns ``target_id``, ``score``, ``n_judgments``.

    ``judgments`` needs ``target_id, judge, rubric, status, score``.

    >>> j = pl.DataFrame({
    ...     "target_id": ["r1", "r1", "r1", "r2", "r2", "r3"],
    ...     "judge": ["g"] * 6,
    ...     "rubric": ["logic", "logic", "style", "logic", "style", "logic"],
    ...     "status": ["ok", "ok", "ok", "ok", "unparsed", "ok"],
    ...     "score": [6.0, 8.0, 4.0, 9.0, None, 5.0],
    ... })

    r1: logic mean (6+8)/2 = 7 and style 4, weighted (3·7 + 1·4)/4 = 6.25. r2's style
    judgment failed and r3 has none, so neither has a score:

    >>> aggregate_scores(j, rubric_weights={"logic": 3, "style": 1}).rows()
    [('r1', 6.25, 3)]

    >>> aggregate_scores(j.filter(pl.col("rubric") == "logic")).sort("target_id").rows()
    [('r1', 7.0, 2), ('r2', 9.0, 1), ('r3', 5.0, 1)]
    """
    ok = (
        select_judge(judgments, judge)
        .lazy()
        .filter((pl.col("status") == "ok") & pl.col("score").is_not_null())
    )
    rubrics = (
        []
        if rubric_weights
        else sorted(ok.select(pl.col("rubric").unique()).collect().get_column("rubric").to_list())
    )
    weights = _rubric_weights(rubrics, rubric_weights)
    active = {r: w for r, w in weights.items() if w != 0}
    total_w = float(sum(active.values()))
    # one lazy plan: Polars fuses the filters and runs both group-bys without materialising
    return (
        ok.filter(pl.col("rubric").is_in(list(active)))
        .group_by("target_id", "rubric")
        .agg(pl.col("score").mean().alias("rubric_score"), pl.len().alias("n"))
        .with_columns(pl.col("rubric").replace_strict(active, return_dtype=pl.Float64).alias("w"))
        .group_by("target_id")
        .agg(
            (pl.col("rubric_score") * pl.col("w")).sum().alias("weighted"),
            pl.col("rubric").n_unique().alias("n_rubrics"),
            pl.col("n").sum().cast(pl.Int64).alias("n_judgments"),
        )
        .filter(pl.col("n_rubrics") == len(active))
        .select("target_id", (pl.col("weighted") / total_w).alias("score"), "n_judgments")
        .sort("target_id")
        .collect()
    )


def _rubric_weights(present: list[str], configured: Mapping[str, float] | None) -> dict[str, float]:
    """Validate configured weights; default: equal weight over the rubrics present.

    >>> _rubric_weights(["a", "b"], None)
    {'a': 1.0, 'b': 1.0}
    >>> _rubric_weights(["a"], {"a": 1, "b": 2})
    {'a': 1.0, 'b': 2.0}
    >>> _rubric_weights(["a"], {"a": -1})
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: rubric_weights: weight of 'a' is -1.0; weights must be >= 0
    """
    if not configured:
        return {r: 1.0 for r in present}
    weights = {str(k): float(v) for k, v in configured.items()}
    check_weights(weights, "rubric_weights")
    return weights


def check_weights(weights: Mapping[str, float], what: str) -> None:
    """Weights must be finite, non-negative, and not all zero.

    >>> check_weights({"a": 0.0}, "positive.weights")
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: positive.weights: weights sum to zero
    """
    for name, w in weights.items():
        if not (w == w) or w in (float("inf"), float("-inf")):
            raise TSODataError(f"{what}: weight of {name!r} is {w}; weights must be finite")
        if w < 0:
            raise TSODataError(f"{what}: weight of {name!r} is {w}; weights must be >= 0")
    if weights and sum(weights.values()) <= 0:
        raise TSODataError(f"{what}: weights sum to zero")
