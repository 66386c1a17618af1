"""Pointwise statistics of a leaderboard, as one SQL statement over per-prompt scores.

The unit is the prompt. A model's answers to one prompt (several samples, several judge
samples, several rubrics) are first reduced to one score per prompt (see
:mod:`tso_data.eval.data`); the statistics below take those per-prompt scores.

* **mean ± standard error**: the mean over prompts and the sample standard deviation
  divided by √n (undefined, null, for a single prompt);
* **paired difference to a baseline**: on the prompts *both* answered, the per-prompt
  difference model − baseline, its mean and its standard error. Prompt difficulty cancels
  out of the difference, so its error is usually far smaller than either score's.

Both per model and per (model, category), in one pass (``GROUPING SETS``). The statement
runs inside DuckDB on the catalog, next to the per-prompt scores, so only the summary
leaves the database; :func:`summarise` runs the same statement on a frame.
"""

from __future__ import annotations

import duckdb
import polars as pl

# Appended to a WITH clause that defines per_prompt(model, prompt_id, category, score).
SUMMARY_SQL = """
paired AS (
    SELECT p.model, p.category, p.score, p.score - b.score AS delta
    FROM per_prompt p LEFT JOIN (SELECT prompt_id, score FROM per_prompt WHERE model = $baseline) b
    USING (prompt_id))
SELECT model, category, grouping(category) = 1 AS overall,
       count(score) AS n, avg(score) AS score, stddev_samp(score) / sqrt(count(score)) AS score_se,
       count(delta) AS n_paired, avg(delta) AS delta_mean, stddev_samp(delta) / sqrt(count(delta)) AS delta_se
FROM paired
GROUP BY GROUPING SETS ((model), (model, category))
"""


def summarise(per_prompt: pl.DataFrame, baseline: str | None) -> pl.DataFrame:
    """:data:`SUMMARY_SQL` on a frame ``model, prompt_id, category, score`` (one row per
    prompt): a row per model (``overall``) and per (model, category).

    Hand-computed: m scores 4, 6, 8, 9 on p1..p4: mean 6.75, sample sd √(14.75/3) = 2.2174,
    standard error 2.2174/2 = 1.1087. The baseline scores 3, 6, 5 on p1..p3, so the paired
    differences are 1, 0, 3: mean 4/3 = 1.3333, sample sd √(7/3) = 1.5275, standard error
    1.5275/√3 = 0.8819 (p4, which the baseline did not answer, is left out).

    >>> frame = pl.DataFrame({
    ...     "model": ["m", "m", "m", "m", "b", "b", "b"],
    ...     "prompt_id": ["p1", "p2", "p3", "p4", "p1", "p2", "p3"],
    ...     "category": ["x", "x", "y", "y", "x", "x", "y"],
    ...     "score": [4.0, 6.0, 8.0, 9.0, 3.0, 6.0, 5.0]})
    >>> rows = {(r["model"], r["category"]): r for r in summarise(frame, "b").to_dicts()}
    >>> m = rows["m", None]
    >>> m["overall"], m["n"], m["score"], round(m["score_se"], 4)
    (True, 4, 6.75, 1.1087)
    >>> m["n_paired"], round(m["delta_mean"], 4), round(m["delta_se"], 4)
    (3, 1.3333, 0.8819)
    >>> rows["b", None]["delta_mean"], rows["b", None]["delta_se"]   # the baseline against itself
    (0.0, 0.0)

    Per category: m on y scores 8 and 9, and only p3 pairs (8 − 5 = 3, one prompt: no
    standard error). Without a baseline there are no differences.

    >>> y = rows["m", "y"]
    >>> y["overall"], y["n"], y["score"], y["n_paired"], y["delta_mean"], y["delta_se"] is None
    (False, 2, 8.5, 1, 3.0, True)
    >>> alone = summarise(frame, None).filter(pl.col("overall") & (pl.col("model") == "m")).to_dicts()[0]
    >>> alone["n_paired"], alone["delta_mean"] is None
    (0, True)
    """
    con = duckdb.connect()
    try:
        con.register("per_prompt_frame", per_prompt.to_arrow())
        sql = "WITH per_prompt AS (SELECT * FROM per_prompt_frame), " + SUMMARY_SQL
        return pl.from_arrow(con.sql(sql, params={"baseline": baseline}).to_arrow_table())  # type: ignore[return-value]
    finally:
        con.close()
