"""Pointwise statistics of a leaderboard: pure functions over Polars frames.

The unit is the prompt. A model's answers to one prompt (several samples, several judge
samples, several rubrics) are first reduced to one score per prompt (see
:mod:`tso_data.eval.data`); the statistics below take those per-prompt scores.

* **mean ± standard error**: the mean over prompts and the sample standard deviation
  divided by √n (undefined, null, for a single prompt);
* **paired difference to a baseline**: on the prompts *both* answered, the per-prompt
  difference model − baseline, its mean and its standard error. Prompt difficulty cancels
  out of the difference, so its error is usually far smaller than either score's.
"""

from __future__ import annotations

import polars as pl

PER_PROMPT_COLUMNS = ("model", "prompt_id", "score")


def _mean_se(column: str, prefix: str) -> list[pl.Expr]:
    value = pl.col(column)
    n = value.count()
    return [
        n.alias(f"n_{prefix}" if prefix else "n"),
        value.mean().alias(f"{prefix}_mean" if prefix else "mean"),
        (value.std(ddof=1) / n.sqrt()).alias(f"{prefix}_se" if prefix else "se"),
    ]


def mean_scores(per_prompt: pl.DataFrame, by: tuple[str, ...] = ("model",)) -> pl.DataFrame:
    """Mean score ± standard error per group of ``by`` (one row per prompt in the input).

    Hand-computed: scores 4, 6, 8 have mean 6, sample sd 2, standard error 2/√3 = 1.1547.

    >>> frame = pl.DataFrame({"model": ["m", "m", "m", "b"], "prompt_id": ["p1", "p2", "p3", "p1"],
    ...                       "score": [4.0, 6.0, 8.0, 5.0]})
    >>> rows = mean_scores(frame).sort("model").to_dicts()
    >>> rows[1]
    {'model': 'm', 'n': 3, 'mean': 6.0, 'se': 1.1547005383792517}
    >>> rows[0]["se"] is None  # one prompt: no standard error
    True
    """
    return per_prompt.group_by(list(by)).agg(*_mean_se("score", "")).sort(list(by))


def paired_differences(per_prompt: pl.DataFrame, baseline: str, by: tuple[str, ...] = ("model",)) -> pl.DataFrame:
    """Per model: the mean of (model − baseline) over the prompts both have ± its standard error.

    Hand-computed: m scores 4, 6, 8 and the baseline 3, 6, 5 on p1..p3 give differences
    1, 0, 3: mean 4/3 = 1.3333, sample sd √(7/3) = 1.5275, standard error 1.5275/√3 = 0.8819.
    Prompt p4, which the baseline did not answer, is left out.

    >>> frame = pl.DataFrame({
    ...     "model": ["m", "m", "m", "m", "b", "b", "b"],
    ...     "prompt_id": ["p1", "p2", "p3", "p4", "p1", "p2", "p3"],
    ...     "score": [4.0, 6.0, 8.0, 9.0, 3.0, 6.0, 5.0]})
    >>> row = paired_differences(frame, "b").filter(pl.col("model") == "m").to_dicts()[0]
    >>> row["n_paired"], round(row["delta_mean"], 4), round(row["delta_se"], 4)
    (3, 1.3333, 0.8819)

    The baseline's difference to itself is 0 exactly:

    >>> paired_differences(frame, "b").filter(pl.col("model") == "b").to_dicts()[0]["delta_mean"]
    0.0
    """
    keys = [k for k in by if k != "model"]
    base = per_prompt.filter(pl.col("model") == baseline).select(*keys, "prompt_id", pl.col("score").alias("_base"))
    paired = per_prompt.join(base, on=[*keys, "prompt_id"], how="inner")
    return (
        paired.with_columns((pl.col("score") - pl.col("_base")).alias("delta"))
        .group_by(list(by))
        .agg(*_mean_se("delta", "delta"))
        .rename({"n_delta": "n_paired"})
        .sort(list(by))
    )
