"""Base pairs (docs/design.md, "1. The method", Pairs): the base model's scored answers are
split at τ (:mod:`tso_data.pairs.tau`: score > τ positive, ≤ τ negative, eqs. 7–8).

- ``best-worst``: draw d pairs the d-th best positive with the d-th worst negative
  (d < cap), ties between equal scores broken at random;
- ``random``: each draw picks one positive and one negative uniformly, ``cap`` times.

A response with a missing or failed score is never used; a pair of equal texts is dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from tso_data.pairs.candidates import Candidates
from tso_data.pairs.config import RoundConfig
from tso_data.pairs.pools import ResolvedPools
from tso_data.pairs.sampling import Stream, smallest_key_per_group, uniform
from tso_data.pairs.selection import SIDE, SLOT, Kind, make_slots, take_side
from tso_data.pairs.tau import split_at_tau


def base_kind(
    candidates: Candidates, pools: ResolvedPools, config: RoundConfig
) -> tuple[Kind, float | None, dict[str, int]]:
    """The base pairs' slots (prompts with a positive and a negative base answer), their
    draw, the global τ (None for per-prompt τ) and the prompts skipped, by reason."""
    n_codes = candidates.n_codes
    every_base = candidates.rows.filter(pl.col("source_index") == candidates.sources.index(pools.base_model))
    scored = every_base.filter(pl.col("score").is_not_null())

    def per_prompt(frame: pl.DataFrame) -> np.ndarray:
        return np.bincount(frame["prompt_code"].to_numpy(), minlength=n_codes)

    skipped = {"base: no scored base answer": int(((per_prompt(every_base) > 0) & (per_prompt(scored) == 0)).sum())}
    base, tau = split_at_tau(scored, config.tau_mode, config.tau_value)  # type: ignore[arg-type]
    base = base.with_columns(prompt_key=pl.Series(candidates.prompt_keys[base["prompt_code"].to_numpy()]))
    prompt_code, above = base["prompt_code"].to_numpy(), base["above_tau"].to_numpy()
    n_above = np.bincount(prompt_code[above], minlength=n_codes)
    n_below = np.bincount(prompt_code[~above], minlength=n_codes)
    skipped["base: no answer above τ"] = int((((n_above + n_below) > 0) & (n_above == 0)).sum())
    skipped["base: no answer at or below τ"] = int(((n_above > 0) & (n_below == 0)).sum())
    cap = config.max_pairs_per_prompt
    eligible = np.flatnonzero((n_above > 0) & (n_below > 0))
    if config.pairing == "best-worst":
        # draw d pairs the d-th best above τ with the d-th worst at or below τ
        slots = make_slots(candidates, eligible, np.minimum(np.minimum(n_above, n_below), cap)[eligible])
    else:
        slots = make_slots(candidates, eligible, cap)
    if config.pairing == "best-worst" and cap == 1:
        pair_up = _best_and_worst(base, n_codes, config.seed)
    elif config.pairing == "best-worst":
        def pair_up(batch: pl.DataFrame) -> pl.DataFrame:
            return _ranked_pairs(base, batch, config.seed)
    else:
        def pair_up(batch: pl.DataFrame) -> pl.DataFrame:
            return _random_pairs(base, batch, config.seed)

    def draw(batch: pl.DataFrame) -> pl.DataFrame:
        pairs = pair_up(batch)
        # a pair of equal texts is no pair (best and worst may read the same)
        same = candidates.same_text(pairs["chosen_answer_row"].to_numpy(), pairs["rejected_answer_row"].to_numpy())
        return pairs.filter(pl.Series(~same))

    return Kind("base", slots, draw, Stream.ORDER_BASE), tau, skipped


def _best_and_worst(base: pl.DataFrame, n_codes: int, seed: int) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """One pair per prompt: the best above τ and the worst at or below τ, ties at random,
    found for every prompt at once without sorting."""
    prompt_code, above = base["prompt_code"].to_numpy(), base["above_tau"].to_numpy()
    answer_key, score = base["answer_key"].to_numpy(), base["score"].to_numpy()

    def tie_key(rows: np.ndarray) -> np.ndarray:
        return uniform(seed, Stream.BASE_TIE, answer_key[rows])

    best = extreme(prompt_code, score, tie_key, above, n_codes, largest=True)
    worst = extreme(prompt_code, score, tie_key, ~above, n_codes, largest=False)

    def pair_up(batch: pl.DataFrame) -> pl.DataFrame:
        codes = batch["prompt_code"].to_numpy()
        return batch.select(SLOT).with_columns(
            **take_side(base, best[codes], "chosen"), **take_side(base, worst[codes], "rejected")
        )

    return pair_up


def _ranked_pairs(base: pl.DataFrame, batch: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Best-worst with several pairs per prompt: rank each side and pair rank d with rank d."""
    rows = base.join(batch.select("prompt_code").unique(), on="prompt_code", how="semi")
    rows = rows.with_columns(tie=pl.Series(uniform(seed, Stream.BASE_TIE, rows["answer_key"])))
    rank = pl.int_range(pl.len(), dtype=pl.UInt64).over("prompt_code").alias("draw_index")
    best_first = (
        rows.filter(pl.col("above_tau")).sort("prompt_code", "score", "tie", descending=[False, True, False])
        .with_columns(rank)
    )
    worst_first = rows.filter(~pl.col("above_tau")).sort("prompt_code", "score", "tie").with_columns(rank)
    slot = ["prompt_code", "draw_index"]
    return _join_sides(best_first.join(batch, on=slot, how="semi"), worst_first.join(batch, on=slot, how="semi"), batch)


def _random_pairs(base: pl.DataFrame, batch: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Random pairing: per slot, one positive and one negative drawn uniformly."""
    slot = ["prompt_code", "draw_index"]
    positives = base.filter(pl.col("above_tau")).join(batch.select(slot), on="prompt_code")
    negatives = base.filter(~pl.col("above_tau")).join(batch.select(slot), on="prompt_code")
    chosen = smallest_key_per_group(positives, seed, Stream.BASE_POSITIVE, slot)
    rejected = smallest_key_per_group(negatives, seed, Stream.BASE_NEGATIVE, slot)
    return _join_sides(chosen, rejected, batch)


def _join_sides(chosen: pl.DataFrame, rejected: pl.DataFrame, batch: pl.DataFrame) -> pl.DataFrame:
    slot = ["prompt_code", "draw_index"]
    return (
        chosen.select(*slot, **{f"chosen_{c}": c for c in SIDE})
        .join(rejected.select(*slot, **{f"rejected_{c}": c for c in SIDE}), on=slot, how="inner")
        .join(batch.select(SLOT), on=slot)
    )


def extreme(
    prompt_code: np.ndarray, score: np.ndarray, tie_key: Callable[[np.ndarray], np.ndarray], mask: np.ndarray,
    n_codes: int, largest: bool,
) -> np.ndarray:
    """Per prompt code: the row (among ``mask``) with the largest (or smallest) score, ties
    broken by the smallest ``tie_key(rows)`` (asked only for the rows at a prompt's top);
    -1 where the prompt has no such row."""
    rows = np.flatnonzero(mask)
    codes, scores = prompt_code[rows], (score[rows] if largest else -score[rows])
    top = np.full(n_codes, -np.inf)
    np.maximum.at(top, codes, scores)
    at_top = scores == top[codes]
    rows, codes = rows[at_top], codes[at_top]
    ties = tie_key(rows)
    lowest = np.full(n_codes, np.inf)
    np.minimum.at(lowest, codes, ties)
    first = ties == lowest[codes]
    out = np.full(n_codes, -1, dtype=np.int64)
    out[codes[first]] = rows[first]
    return out
