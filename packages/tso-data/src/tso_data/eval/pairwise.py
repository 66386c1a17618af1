"""Pairwise statistics of a leaderboard with AlpacaEval's definitions: pure functions over
Polars frames.

A *preference* p ∈ [1, 2] compares a model's answer with the baseline's on one prompt:
1 = the baseline's is better, 2 = the model's, 1.5 = a tie; a weighted judge (or the
average of the two orders a judge was asked in) gives any value between. Per model, over
its prompts (one preference each):

* win rate = 100 · mean(p − 1) (ties count half);
* its standard error = 100 · sd(p − 1) / √n (sample sd);
* wins: p > 1.5, losses: p < 1.5, draws: p = 1.5 exactly;
* discrete win rate = 100 · (wins + draws / 2) / n.

AlpacaEval writes a draw as 0 in old annotation files; :func:`normalise_preference`
maps it to 1.5, and anything else outside [1, 2] is not a preference.
"""

from __future__ import annotations

import math

import polars as pl

DRAW = 1.5


def normalise_preference(value: object) -> float | None:
    """A stored preference in [1, 2] from an annotation's value; None when there is none.

    >>> normalise_preference(1.75), normalise_preference(0), normalise_preference(None)
    (1.75, 1.5, None)
    >>> normalise_preference(float("nan")) is None
    True
    >>> normalise_preference(2.5)
    Traceback (most recent call last):
    ...
    ValueError: 2.5 is outside the preference scale [1, 2] (0 = a draw in old files)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    number = float(value)
    if math.isnan(number):
        return None
    if number == 0:
        return DRAW
    if not 1.0 <= number <= 2.0:
        raise ValueError(f"{value!r} is outside the preference scale [1, 2] (0 = a draw in old files)")
    return number


def head_to_head(per_prompt: pl.DataFrame, by: tuple[str, ...] = ("model",)) -> pl.DataFrame:
    """Win rate, its standard error, wins / losses / draws and the discrete win rate.

    Hand-computed: preferences 2, 1, 1.5, 1.75 → p − 1 = 1, 0, 0.5, 0.75: win rate
    100 · 2.25 / 4 = 56.25; sample sd √(0.546875 / 3) = 0.42696, standard error
    100 · 0.42696 / 2 = 21.348; wins 2 (2 and 1.75), losses 1, draws 1; discrete win rate
    100 · (2 + 0.5) / 4 = 62.5.

    >>> frame = pl.DataFrame({"model": ["m"] * 4, "prompt_id": ["p1", "p2", "p3", "p4"],
    ...                       "preference": [2.0, 1.0, 1.5, 1.75]})
    >>> row = head_to_head(frame).to_dicts()[0]
    >>> row["n"], row["win_rate"], round(row["standard_error"], 3), row["discrete_win_rate"]
    (4, 56.25, 21.348, 62.5)
    >>> row["n_wins"], row["n_losses"], row["n_draws"]
    (2, 1, 1)
    """
    gain = pl.col("preference") - 1.0
    n = pl.len()
    wins = (pl.col("preference") > DRAW).sum()
    draws = (pl.col("preference") == DRAW).sum()
    return (
        per_prompt.group_by(list(by))
        .agg(
            n.alias("n"),
            (100.0 * gain.mean()).alias("win_rate"),
            (100.0 * gain.std(ddof=1) / n.sqrt()).alias("standard_error"),
            (100.0 * (wins + 0.5 * draws) / n).alias("discrete_win_rate"),
            wins.alias("n_wins"),
            (pl.col("preference") < DRAW).sum().alias("n_losses"),
            draws.alias("n_draws"),
        )
        .sort(list(by))
    )
