"""The leaderboard: one row per model (pointwise score ± se, paired difference to the
baseline ± se, and with pairwise verdicts AlpacaEval's win rates), plus a per-category
breakdown. Computed from :class:`tso_data.eval.data.EvalData` by the pure statistics of
:mod:`~tso_data.eval.pointwise`, :mod:`~tso_data.eval.pairwise` and
:mod:`~tso_data.eval.length_control`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tso_data.eval.data import EvalData, Selection
from tso_data.eval.difficulty import estimate_difficulty
from tso_data.eval.length_control import length_controlled_win_rate, standardised_length_difference
from tso_data.eval.pairwise import head_to_head

LC_COLUMNS = {"lc_win_rate": pl.Float64, "lc_standard_error": pl.Float64}


@dataclass(frozen=True)
class Leaderboard:
    """``table``: one row per model; ``categories``: one row per (model, category).

    ``difficulty`` says where the length-controlled win rate's instruction difficulties
    came from: ``'given'`` (a file), ``'estimated from N models'``, or None (no pairwise).
    """

    judge: str
    split: str
    baseline: str | None
    rubrics: tuple[str, ...]
    pairwise_rubric: str | None
    split_prompts: int
    table: pl.DataFrame
    categories: pl.DataFrame
    difficulty: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "judge": self.judge, "split": self.split, "baseline": self.baseline, "rubrics": list(self.rubrics),
            "pairwise_rubric": self.pairwise_rubric, "split_prompts": self.split_prompts,
            "difficulty": self.difficulty, "notes": list(self.notes),
            "models": finite_rows(self.table), "categories": finite_rows(self.categories),
        }


def finite_rows(frame: pl.DataFrame) -> list[dict[str, object]]:
    """Rows as dicts, NaN as None: an undefined statistic is not a number."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in frame.to_dicts()]


def build(data: EvalData, selection: Selection, difficulty: pl.DataFrame | None = None) -> Leaderboard:
    """The leaderboard of ``selection.models`` from the loaded frames.

    ``difficulty`` (``prompt_id, difficulty``) is used for the length-controlled win rate
    when given; otherwise it is estimated from the compared models' preferences.
    """
    table = data.models.select("model", "family", "version", "size_b", "version_order").with_columns(
        (pl.col("model") == (selection.baseline or "")).alias("is_baseline"))
    overall = pl.col("overall")
    table = table.join(data.pointwise.filter(overall).drop("category", "overall"), on="model", how="left")
    categories = data.pointwise.filter(~overall).drop("overall")
    source = None
    if data.preferences is not None:
        table, categories, source = _add_pairwise(table, categories, data.preferences, difficulty)
    sort_key = next(c for c in ("lc_win_rate", "win_rate", "score") if c in table.columns)
    table = table.sort([sort_key, "model"], descending=[True, False], nulls_last=True).drop("version_order")
    notes = _notes(data, selection)
    return Leaderboard(selection.judge, selection.split, selection.baseline, selection.rubrics,
                       selection.pairwise_rubric, data.split_prompts, table,
                       categories.sort(["model", "category"], nulls_last=True), source, notes)


def _add_pairwise(table: pl.DataFrame, categories: pl.DataFrame, preferences: pl.DataFrame,
                  difficulty: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame, str | None]:
    h2h = head_to_head(preferences).rename({"n": "n_pairwise"})
    lengths = preferences.group_by("model").agg(pl.col("len_model").mean().alias("avg_length"))
    lc, source = _length_controlled(preferences, difficulty)
    table = (table.join(h2h, on="model", how="left").join(lengths, on="model", how="left")
             .join(lc, on="model", how="left"))
    per_category = head_to_head(preferences, ("model", "category")).select(
        "model", "category", pl.col("n").alias("n_pairwise"), "win_rate", "standard_error")
    categories = categories.join(per_category, on=["model", "category"], how="full", coalesce=True, nulls_equal=True)
    return table, categories, source


def _length_controlled(preferences: pl.DataFrame, difficulty: pl.DataFrame | None) -> tuple[pl.DataFrame, str | None]:
    """Per model: the length-controlled win rate and its standard error."""
    empty = pl.DataFrame(schema={"model": pl.String, **LC_COLUMNS})
    if preferences.height == 0:
        return empty, None
    if difficulty is None:
        difficulty, source = _estimated_difficulty(preferences)
    else:
        source = "given"
    # the prompts in their source order (external ids: AlpacaEval's `index`), then by id: the
    # cross-validation folds take every 5th row, so the order is part of the definition
    frame = preferences.join(difficulty.select("prompt_id", "difficulty"), on="prompt_id", how="left").sort(
        pl.col("external_id").cast(pl.Int64, strict=False), "external_id", "prompt_id", nulls_last=True)
    rows = []
    for (model,), group in frame.group_by(["model"], maintain_order=True):
        result = length_controlled_win_rate(
            group.get_column("preference").to_numpy(), group.get_column("len_model").to_numpy(),
            group.get_column("len_baseline").to_numpy(), group.get_column("difficulty").fill_null(0.0).to_numpy())
        if result is not None:
            rows.append({"model": model, "lc_win_rate": result.win_rate, "lc_standard_error": result.standard_error})
    return (pl.DataFrame(rows, schema=empty.schema) if rows else empty), source


def _estimated_difficulty(preferences: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    codes = preferences.select(
        (pl.col("model").rank("dense").cast(pl.Int64) - 1).alias("m"),
        (pl.col("prompt_id").rank("dense").cast(pl.Int64) - 1).alias("p"),
        "prompt_id", "model", "preference", "len_model", "len_baseline")
    prompts = codes.select("p", "prompt_id").unique("p").sort("p")
    length = np.zeros(codes.height)
    for _, group in codes.with_row_index("row").group_by(["model"]):  # the length term is per model
        delta = standardised_length_difference(group.get_column("len_model").to_numpy(),
                                               group.get_column("len_baseline").to_numpy())
        length[group.get_column("row").to_numpy()] = np.tanh(delta)
    gamma = estimate_difficulty(codes.get_column("m").to_numpy(), codes.get_column("p").to_numpy(),
                                codes.get_column("preference").to_numpy() - 1.0, length,
                                int(prompts.get_column("p").max()) + 1)
    frame = prompts.with_columns(pl.Series("difficulty", gamma[prompts.get_column("p").to_numpy()]))
    n_models = preferences.get_column("model").n_unique()
    return frame.select("prompt_id", "difficulty"), f"estimated from {n_models} model{'s' * (n_models != 1)}"


def _notes(data: EvalData, selection: Selection) -> list[str]:
    notes = []
    judged = set(data.pointwise.get_column("model").unique().to_list())
    compared = set() if data.preferences is None else set(data.preferences.get_column("model").unique().to_list())
    for model in selection.models:
        if model not in judged and model not in compared and model != selection.baseline:
            notes.append(f"{model}: no ok judgments by {selection.judge} on split {selection.split!r}")
    return notes
