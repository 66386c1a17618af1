"""`tso-data scores`: τ, the score distribution per source, and the per-prompt skewness
and kurtosis of the base model's scores over many samples (the paper's Figure 5).

Scores are aggregated by :mod:`tso_data.scoring` — the very functions `tso-data build`
uses — so the τ printed here is the τ the round's snapshot is built with.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.pairs.tau import tau_per_prompt
from tso_data.scoring import aggregate_scores
from tso_data.shards import merge_shards

JUDGMENT_COLUMNS = "target_id, prompt_id, source, judge, rubric, status, score"


@dataclass(frozen=True)
class ScoreReport:
    judge: str | None
    base: str
    tau_mode: str
    tau: float | None  # None for 'prompt-mean' (one τ per prompt, see tau_per_prompt)
    n_base: int  # scored base answers τ is computed over
    distribution: pl.DataFrame  # source, n, mean, std, min, p10, median, p90, max
    per_prompt: pl.DataFrame  # prompt_id, n, mean, std, skewness, kurtosis (base, n >= min_samples)
    tau_per_prompt: pl.DataFrame = field(default_factory=pl.DataFrame)  # prompt_id, tau

    def as_dict(self) -> dict[str, object]:
        return {
            "judge": self.judge,
            "base": self.base,
            "tau": {"mode": self.tau_mode, "value": self.tau, "n_base": self.n_base},
            "distribution": _finite_rows(self.distribution),
            "per_prompt": _finite_rows(self.per_prompt),
            "tau_per_prompt": _finite_rows(self.tau_per_prompt) if self.tau is None else None,
        }


def _finite_rows(frame: pl.DataFrame) -> list[dict[str, object]]:
    """Rows as dicts with NaN replaced by None: an undefined statistic is not a number."""
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        for row in frame.to_dicts()
    ]


def load_judgments(catalog: Catalog) -> pl.DataFrame:
    merge_shards(catalog, "judgments", replace=True)
    with catalog.connect(read_only=True) as con:
        return pl.from_arrow(con.sql(f"SELECT {JUDGMENT_COLUMNS} FROM judgments").to_arrow_table())  # type: ignore[return-value]


def load_targets(catalog: Catalog) -> pl.DataFrame:
    """``target_id, prompt_id, source`` of every response and human answer."""
    with catalog.connect(read_only=True) as con:
        return pl.from_arrow(con.sql(  # type: ignore[return-value]
            "SELECT response_id AS target_id, prompt_id, model AS source FROM responses UNION ALL "
            "SELECT answer_id, prompt_id, source FROM answers"
        ).to_arrow_table())


def load_split_prompts(catalog: Catalog, split: str) -> pl.DataFrame:
    with catalog.connect(read_only=True) as con:
        prompts = pl.from_arrow(con.sql("SELECT prompt_id FROM prompts WHERE split = ?",
                                        params=[split]).to_arrow_table())
        if prompts.height == 0:  # type: ignore[union-attr]
            from tso_data.pairs.run import unknown_split

            raise unknown_split(con, split, "--split (or the round's split in round.toml)")
        return prompts  # type: ignore[return-value]


def score_report(
    judgments: pl.DataFrame,
    *,
    base: str,
    judge: str | None = None,
    tau_mode: str = "global-mean",
    tau_value: float | None = None,
    rubric_weights: Mapping[str, float] | None = None,
    rubrics: Sequence[str] = (),
    prompts: pl.DataFrame | None = None,
    targets: pl.DataFrame | None = None,
    min_samples: int = 3,
) -> ScoreReport:
    """The report from a frame of judgments (columns :data:`JUDGMENT_COLUMNS`).

    ``prompts`` (a ``prompt_id`` column) restricts everything to those prompts, as the
    round's ``split`` does in `tso-data build`. ``targets`` (``target_id, prompt_id,
    source``: the responses and answers) saves a pass over the judgments to find them.
    """
    if judgments.height == 0 or judgments.filter(pl.col("status") == "ok").height == 0:
        raise TSODataError("no scored judgments in the catalog; run `tso-data judge` (or ingest judgments) first")
    if rubrics:
        judgments = judgments.filter(pl.col("rubric").is_in(list(rubrics)))
        if judgments.height == 0:
            raise TSODataError(f"no judgments with rubric(s) {', '.join(rubrics)}")
    scores = aggregate_scores(judgments, judge=judge, rubric_weights=rubric_weights)
    if judge is None:  # aggregate_scores has checked there is only one
        judge = judgments.get_column("judge").drop_nulls().first()
    if targets is None:
        targets = judgments.group_by("target_id").agg(pl.col("prompt_id").first(), pl.col("source").first())
    meta = targets.select("target_id", "prompt_id", "source")
    scored = scores.join(meta, on="target_id", how="inner")
    if prompts is not None:
        scored = scored.join(prompts.select("prompt_id"), on="prompt_id", how="semi")
    base_scores = scored.filter(pl.col("source") == base)
    if base_scores.height == 0:
        who = f"judge {judge!r}" if judge else "the judge"
        raise TSODataError(f"base model {base!r} has no answers scored by {who} (with every weighted rubric)")
    taus, tau = tau_per_prompt(base_scores.select("prompt_id", "score"), tau_mode, tau_value)  # type: ignore[arg-type]
    return ScoreReport(
        judge, base, tau_mode, tau, base_scores.height, _distribution(scored),
        _per_prompt_shape(base_scores, min_samples), taus.sort("prompt_id"),
    )


def _distribution(scored: pl.DataFrame) -> pl.DataFrame:
    """Per source: the count, mean, spread and quantiles of its answers' scores, best first."""
    score = pl.col("score")
    return (
        scored.group_by("source")
        .agg(
            pl.len().alias("n"), score.mean().alias("mean"), score.std().alias("std"), score.min().alias("min"),
            score.quantile(0.1, "linear").alias("p10"), score.median().alias("median"),
            score.quantile(0.9, "linear").alias("p90"), score.max().alias("max"),
        )
        .sort(["mean", "source"], descending=[True, False])
    )


def _per_prompt_shape(base_scores: pl.DataFrame, min_samples: int) -> pl.DataFrame:
    """Per prompt with at least ``min_samples`` scored base answers: the mean, spread, skewness
    and excess kurtosis of their scores (paper Figure 5)."""
    score = pl.col("score")
    # bias-corrected sample skewness and excess kurtosis (0 for a normal distribution):
    # the paper's "normalized kurtosis"; undefined (null) below 3 / 4 samples
    return (
        base_scores.group_by("prompt_id")
        .agg(
            pl.len().alias("n"), score.mean().alias("mean"), score.std().alias("std"),
            score.skew(bias=False).alias("skewness"), score.kurtosis(fisher=True, bias=False).alias("kurtosis"),
        )
        .filter(pl.col("n") >= min_samples)
        .with_columns(
            pl.when(pl.col("n") >= 3).then(pl.col("skewness")).alias("skewness"),
            pl.when(pl.col("n") >= 4).then(pl.col("kurtosis")).alias("kurtosis"),
        )
        .sort("prompt_id")
    )

def plot_report(report: ScoreReport, path: Path) -> None:
    """Two panels: mean score per source (± std) with τ marked; per-prompt skewness vs excess
    kurtosis of the base model's scores coloured by the prompt's mean (paper Figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_src, ax_shape) = plt.subplots(1, 2, figsize=(12, 4.8))
    rows = report.distribution.to_dicts()
    ax_src.bar([r["source"] for r in rows], [r["mean"] for r in rows],
               yerr=[r["std"] if r["std"] is not None and math.isfinite(r["std"]) else 0 for r in rows],
               alpha=0.75, capsize=3)
    if report.tau is not None:
        ax_src.axhline(report.tau, color="black", linestyle="--", label=f"τ = {report.tau:.3g} ({report.tau_mode})")
        ax_src.legend()
    ax_src.set_ylabel(f"mean score ({report.judge or 'judge'})")
    ax_src.set_title("Score per source (± std)")
    ax_src.tick_params(axis="x", rotation=30)
    shape = [r for r in _finite_rows(report.per_prompt) if r["skewness"] is not None and r["kurtosis"] is not None]
    if shape:
        points = ax_shape.scatter([r["skewness"] for r in shape], [r["kurtosis"] for r in shape],
                                  c=[r["mean"] for r in shape], cmap="viridis", s=18)
        fig.colorbar(points, ax=ax_shape, label="mean score")
    else:
        ax_shape.text(0.5, 0.5, "no prompt has enough scored samples (>= 4)", ha="center", transform=ax_shape.transAxes)
    ax_shape.axhline(0, color="grey", linewidth=0.5)
    ax_shape.axvline(0, color="grey", linewidth=0.5)
    ax_shape.set_xlabel("skewness")
    ax_shape.set_ylabel("excess kurtosis")
    ax_shape.set_title(f"Per-prompt score shape of {report.base} ({len(shape)} prompts)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)  # never a half-written image
