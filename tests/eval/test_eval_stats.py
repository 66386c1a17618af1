"""The leaderboard's statistics against plain-Python definitions (property tests) and
against alpaca_eval's own metric code on the same preferences."""

from __future__ import annotations

import math
import statistics

import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tso_data.eval.pairwise import head_to_head
from tso_data.eval.pointwise import summarise
from tso_data.eval.verdicts import parse_verdict, preference_of

scores = st.lists(st.floats(1, 10, allow_nan=False).map(lambda x: round(x, 2)), min_size=1, max_size=30)
# preferences as a judge gives them: discrete verdicts, averages of two orders, weighted values
preferences = st.lists(st.one_of(st.sampled_from([1.0, 1.25, 1.5, 1.75, 2.0]), st.floats(1, 2)), min_size=2,
                       max_size=60)


@settings(max_examples=60, deadline=None)
@given(model=scores, baseline=scores)
def test_pointwise_statistics_match_their_definitions(model: list[float], baseline: list[float]) -> None:
    rows = [("m", f"p{i}", s) for i, s in enumerate(model)] + [("b", f"p{i}", s) for i, s in enumerate(baseline)]
    frame = pl.DataFrame(rows, schema=["model", "prompt_id", "score"], orient="row").with_columns(category=pl.lit("c"))
    got = {r["model"]: r for r in summarise(frame, "b").filter(pl.col("overall")).to_dicts()}["m"]
    assert got["n"] == len(model)
    assert got["score"] == pytest.approx(statistics.fmean(model))
    if len(model) > 1:
        assert got["score_se"] == pytest.approx(statistics.stdev(model) / math.sqrt(len(model)))
    paired = got
    diffs = [m - b for m, b in zip(model, baseline)]  # only prompts both answered
    assert paired["n_paired"] == len(diffs)
    assert paired["delta_mean"] == pytest.approx(statistics.fmean(diffs), abs=1e-9)
    if len(diffs) > 1:
        assert paired["delta_se"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(len(diffs)), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(prefs=preferences)
def test_win_rates_equal_alpaca_evals_own_metric_code(prefs: list[float], alpaca_eval_metrics) -> None:
    """Win rate, standard error, discrete win rate and W/L/D exactly as alpaca_eval computes
    them (its get_winrate produced the published leaderboard numbers)."""
    ours = head_to_head(pl.DataFrame({"model": ["m"] * len(prefs), "prompt_id": [f"p{i}" for i in range(len(prefs))],
                                      "preference": prefs})).to_dicts()[0]
    theirs = alpaca_eval_metrics.get_winrate(pd.DataFrame({"preference": prefs}))
    assert ours["win_rate"] == pytest.approx(theirs["win_rate"], abs=1e-9)
    assert ours["standard_error"] == pytest.approx(theirs["standard_error"], abs=1e-9)
    assert ours["discrete_win_rate"] == pytest.approx(theirs["discrete_win_rate"], abs=1e-9)
    assert (ours["n_wins"], ours["n_losses"], ours["n_draws"], ours["n"]) == (
        theirs["n_wins"], theirs["n_wins_base"], theirs["n_draws"], theirs["n_total"])


@given(winner=st.sampled_from(["A", "B", "tie"]))
def test_both_orders_of_one_verdict_cancel_position_bias(winner: str) -> None:
    """A judge that always picks the same position prefers neither answer on average."""
    assert (preference_of(winner, 1) + preference_of(winner, 2)) / 2 == 1.5


@given(prefix=st.text(max_size=80), verdict=st.sampled_from(["[[A]]", "[[B]]", "[[C]]"]))
def test_the_last_verdict_wins_whatever_comes_before(prefix: str, verdict: str) -> None:
    parsed = parse_verdict(f"{prefix}\nSo: [[A]] or [[B]]?\nFinal: {verdict}")
    assert parsed.status == "ok" and parsed.winner == {"[[A]]": "A", "[[B]]": "B", "[[C]]": "tie"}[verdict]


def test_a_verdict_outside_the_scale_is_unparsed_never_an_earlier_one() -> None:
    parsed = parse_verdict("I first thought [[A]]. Final verdict: [[E]]")
    assert parsed.status == "unparsed" and parsed.winner is None and "'E'" in parsed.reason
