"""One score per judged target, and τ.

Per target: the mean over a judge's ok samples for each rubric (dimension), then the
weighted mean over dimensions (weights renormalised over the dimensions the target has).
τ (paper eq. 7-8) splits the base model's answers: ``mean`` = mean of the base model's
target scores; ``per-prompt`` = that mean per prompt; ``fixed`` = a number you choose.

Everything runs as one DuckDB query over the judgments (10M rows in seconds, see
``benchmarks/bench_judge.py``). Failed judgments (status != 'ok') never contribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from tso_data.errors import TSODataError

TAU_MODES = ("mean", "per-prompt", "fixed")


def target_scores_sql(
    relation: str = "judgments",
    *,
    judge: str,
    weights: Mapping[str, float] | None = None,
    rubrics: Sequence[str] = (),
) -> tuple[str, list[object]]:
    """SQL (and parameters) selecting ``target_id, prompt_id, source, score, n_rubrics, n_samples``."""
    names = list(rubrics) or (list(weights) if weights else [])
    rubric_filter = f"AND rubric IN ({', '.join('?' for _ in names)})" if names else ""
    weight_params: list[object] = []
    if weights:
        if any(not (w >= 0) for w in weights.values()) or sum(weights.values()) <= 0:
            raise TSODataError(f"rubric weights must be >= 0 with a positive sum, got {dict(weights)}")
        weight_cte = f"weights(rubric, w) AS (VALUES {', '.join('(?, ?)' for _ in weights)})"
        for name, w in weights.items():
            weight_params.extend([name, float(w)])
        weighted = "sum(d.score * weights.w) / nullif(sum(weights.w), 0)"
        join = "JOIN weights USING (rubric)"
    else:
        weight_cte = "weights(rubric, w) AS (SELECT NULL, NULL)"
        weighted = "avg(d.score)"
        join = ""
    params: list[object] = [*weight_params, judge, *names]
    sql = f"""
    WITH {weight_cte},
    per_dim AS (
        SELECT target_id, rubric, any_value(prompt_id) AS prompt_id, any_value(source) AS source,
               avg(score) AS score, count(*) AS n_samples
        FROM {relation}
        WHERE status = 'ok' AND judge = ? {rubric_filter}
        GROUP BY target_id, rubric
    )
    SELECT d.target_id, any_value(d.prompt_id) AS prompt_id, any_value(d.source) AS source,
           {weighted} AS score, count(*) AS n_rubrics, sum(d.n_samples) AS n_samples
    FROM per_dim d {join}
    GROUP BY d.target_id
    """
    return sql, params


@dataclass(frozen=True)
class Tau:
    mode: str
    value: float | None  # the global τ ('mean', 'fixed'); for 'per-prompt' the mean of the per-prompt values
    n_base: int  # base targets with a score
    per_prompt: pa.Table | None = None  # prompt_id, tau, n (per-prompt mode)


def compute_tau(
    con: duckdb.DuckDBPyConnection,
    scores_relation: str,
    base: str,
    mode: str = "mean",
    fixed: float | None = None,
) -> Tau:
    """τ over the base model's scored targets in ``scores_relation`` (target scores)."""
    if mode not in TAU_MODES:
        raise TSODataError(f"τ mode {mode!r}: expected one of {', '.join(TAU_MODES)}")
    row = con.execute(
        f"SELECT count(*), avg(score) FROM {scores_relation} WHERE source = ?", [base]
    ).fetchall()[0]
    n_base, mean = int(row[0]), row[1]
    if mode == "fixed":
        if fixed is None:
            raise TSODataError("τ mode 'fixed' needs a value (--tau-value)")
        return Tau("fixed", float(fixed), n_base)
    if mode == "mean":
        return Tau("mean", None if mean is None else float(mean), n_base)
    per_prompt = con.sql(
        f"SELECT prompt_id, avg(score) AS tau, count(*) AS n FROM {scores_relation} "
        f"WHERE source = ? GROUP BY prompt_id ORDER BY prompt_id",
        params=[base],
    ).to_arrow_table()
    values = per_prompt.column("tau").to_pylist()
    overall = sum(values) / len(values) if values else None
    return Tau("per-prompt", overall, n_base, per_prompt)


def aggregate_parquet(
    path: str | Path, *, judge: str, base: str, threads: int | None = None,
    weights: Mapping[str, float] | None = None, tau_mode: str = "mean",
) -> dict[str, float | int | None]:
    """Target scores and τ straight from a Parquet file of judgments (exported, or another
    engine's output), with the same SQL as `tso-data scores`; used by the benchmark."""
    config = {"threads": threads} if threads else {}
    con = duckdb.connect(config=config)
    try:
        source = "read_parquet('" + str(path).replace("'", "''") + "')"
        sql, params = target_scores_sql(source, judge=judge, weights=weights)
        con.execute(f"CREATE TEMP TABLE target_scores AS {sql}", params)
        tau = compute_tau(con, "target_scores", base, tau_mode)
        n_targets = con.execute("SELECT count(*) FROM target_scores").fetchall()[0][0]
    finally:
        con.close()
    return {"tau": tau.value, "n_base": tau.n_base, "n_targets": int(n_targets)}
