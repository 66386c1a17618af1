"""`tso-data scores`: τ, score distribution per source, per-prompt skewness and kurtosis
of the base model's scores over many samples (the paper's Figure 5), and a plot."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.judge.aggregate import Tau, compute_tau, target_scores_sql
from tso_data.shards import merge_shards


@dataclass(frozen=True)
class ScoreReport:
    judge: str
    base: str
    tau: Tau
    distribution: pa.Table  # source, n, mean, std, min, p10, median, p90, max
    per_prompt: pa.Table  # prompt_id, n, mean, std, skewness, kurtosis (base model, n >= min_samples)

    def as_dict(self) -> dict[str, object]:
        return {
            "judge": self.judge,
            "base": self.base,
            "tau": {"mode": self.tau.mode, "value": self.tau.value, "n_base": self.tau.n_base},
            "distribution": self.distribution.to_pylist(),
            "per_prompt": self.per_prompt.to_pylist(),
        }


def default_judge(catalog: Catalog) -> str:
    merge_shards(catalog, "judgments", replace=True)
    judges = catalog.arrow(
        "SELECT DISTINCT judge FROM judgments WHERE status = 'ok' ORDER BY judge"
    ).column(0).to_pylist()
    if not judges:
        raise TSODataError("no scored judgments in the catalog; run `tso-data judge` first")
    if len(judges) > 1:
        raise TSODataError(f"several judges have scores ({', '.join(judges)}); pick one with --judge")
    return judges[0]


def score_report(
    catalog: Catalog,
    *,
    judge: str,
    base: str,
    tau_mode: str = "mean",
    tau_value: float | None = None,
    weights: Mapping[str, float] | None = None,
    rubrics: Sequence[str] = (),
    min_samples: int = 3,
) -> ScoreReport:
    merge_shards(catalog, "judgments", replace=True)
    sql, params = target_scores_sql("judgments", judge=judge, weights=weights, rubrics=rubrics)
    with catalog.connect(read_only=True) as con:
        con.execute(f"CREATE TEMP TABLE target_scores AS {sql}", params)
        if con.execute("SELECT count(*) FROM target_scores").fetchall()[0][0] == 0:
            raise TSODataError(f"judge {judge!r} has no ok judgments (for the chosen rubrics)")
        tau = compute_tau(con, "target_scores", base, tau_mode, tau_value)
        distribution = con.sql(
            "SELECT source, count(*) AS n, avg(score) AS mean, stddev_samp(score) AS std, min(score) AS min, "
            "quantile_cont(score, 0.1) AS p10, median(score) AS median, quantile_cont(score, 0.9) AS p90, "
            "max(score) AS max FROM target_scores GROUP BY source ORDER BY mean DESC, source"
        ).to_arrow_table()
        # DuckDB's skewness/kurtosis are the bias-corrected sample statistics; kurtosis is
        # excess kurtosis (0 for a normal distribution), the paper's "normalized kurtosis".
        per_prompt = con.sql(
            "SELECT prompt_id, count(*) AS n, avg(score) AS mean, stddev_samp(score) AS std, "
            "skewness(score) AS skewness, kurtosis(score) AS kurtosis FROM target_scores "
            "WHERE source = ? GROUP BY prompt_id HAVING count(*) >= ? ORDER BY prompt_id",
            params=[base, min_samples],
        ).to_arrow_table()
    if tau.n_base == 0:
        raise TSODataError(f"base model {base!r} has no answers scored by judge {judge!r}")
    return ScoreReport(judge, base, tau, distribution, per_prompt)


def plot_report(report: ScoreReport, path: Path) -> None:
    """Two panels: score histograms per source with τ marked; per-prompt skewness vs
    kurtosis of the base model's scores coloured by the prompt's mean (paper Figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_hist, ax_shape) = plt.subplots(1, 2, figsize=(12, 4.8))
    for row in report.distribution.to_pylist():
        ax_hist.bar(row["source"], row["mean"], yerr=row["std"] or 0, alpha=0.7, capsize=3)
    if report.tau.value is not None:
        ax_hist.axhline(report.tau.value, color="black", linestyle="--", label=f"τ = {report.tau.value:.3g} ({report.tau.mode})")
        ax_hist.legend()
    ax_hist.set_ylabel(f"mean score ({report.judge})")
    ax_hist.set_title("Score per source (± std)")
    ax_hist.tick_params(axis="x", rotation=30)
    rows = [r for r in report.per_prompt.to_pylist() if r["skewness"] is not None and r["kurtosis"] is not None]
    if rows:
        points = ax_shape.scatter(
            [r["skewness"] for r in rows], [r["kurtosis"] for r in rows],
            c=[r["mean"] for r in rows], cmap="viridis", s=18,
        )
        fig.colorbar(points, ax=ax_shape, label="mean score")
    else:
        ax_shape.text(0.5, 0.5, "no prompt has enough scored samples", ha="center", transform=ax_shape.transAxes)
    ax_shape.axhline(0, color="grey", linewidth=0.5)
    ax_shape.axvline(0, color="grey", linewidth=0.5)
    ax_shape.set_xlabel("skewness")
    ax_shape.set_ylabel("excess kurtosis")
    ax_shape.set_title(f"Per-prompt score shape, base {report.base} (n={len(rows)})")
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)  # never a half-written image
