"""The fast vectorised core returns exactly the pairs of the plain per-prompt reference
(tso_data.pairs.reference), in the same order, on random catalogs and configurations."""

from __future__ import annotations

import numpy as np
import pytest
from build_frames import BASE, NEGATIVE, POSITIVE, config, make_inputs, models_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tso_data.errors import TSODataError
from tso_data.pairs import reference, sampling
from tso_data.pairs.core import build_pairs
from tso_data.pairs.pools import resolve_pools

# few texts, so chosen and rejected often read the same; several answers per source and prompt
TEXTS = st.sampled_from(["a", "b", "c", "d"])
SOURCES = st.sampled_from(sorted(POSITIVE | NEGATIVE | {"f-v3-7b"}))
PROMPT = st.fixed_dictionaries({
    "answers": st.lists(st.tuples(SOURCES, TEXTS), max_size=8),
    "base": st.lists(st.tuples(TEXTS, st.one_of(st.none(), st.integers(1, 6))), max_size=5),
    "split": st.sampled_from(["train", "train", "train", "heldout"]),
})
WEIGHT = st.sampled_from([0.5, 1.0, 3.0])
ROUND = st.fixed_dictionaries({
    "seed": st.integers(0, 2**63 - 1),
    "max_pairs_per_prompt": st.integers(1, 3),
    "pairs": st.one_of(st.none(), st.integers(1, 40)),
    "mix": st.sampled_from([{"matrix": 1, "base": 1}, {"matrix": 1, "base": 0}, {"matrix": 0, "base": 1},
                            {"matrix": 3, "base": 1}]),
    "base_pairs": st.fixed_dictionaries({"pairing": st.sampled_from(["best-worst", "random"])}),
    "tau": st.sampled_from([{"mode": "global-mean"}, {"mode": "prompt-mean"}, {"mode": "fixed", "value": 3.0}]),
    "positive": st.fixed_dictionaries({
        "sources": st.just(["newest-largest", "human"]),
        "weights": st.fixed_dictionaries({"newest-largest": st.sampled_from([1.0, 2.0]),
                                          "human": st.sampled_from([0.0, 1.0, 3.0])}),
    }),
    "negative": st.lists(st.sampled_from(sorted(NEGATIVE | {BASE})), min_size=1, max_size=4, unique=True).flatmap(
        lambda sources: st.fixed_dictionaries({"sources": st.just(sources),
                                               "weights": st.fixed_dictionaries({s: WEIGHT for s in sources})})
    ),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.lists(PROMPT, min_size=1, max_size=25), over=ROUND)
def test_fast_core_returns_the_reference_pairs(spec: list[dict], over: dict) -> None:
    inputs = make_inputs(spec)
    try:
        cfg = config(**over)
        pools = resolve_pools(cfg, models_frame())
        fast = build_pairs(inputs, cfg, pools)
    except TSODataError as exc:  # e.g. every negative weight zero, or τ with no scored base answer
        assert "weights" in str(exc) or "no scored base answers" in str(exc) or "pool is empty" in str(exc)
        return
    assert fast.pairs.to_dicts() == reference.reference_pairs(inputs, cfg, pools)


@given(seed=st.integers(0, 2**63 - 1), stream=st.integers(1, 9),
       keys=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=4))
def test_reference_uniform_is_the_vectorised_one(seed: int, stream: int, keys: list[int]) -> None:
    vectorised = sampling.uniform(seed, stream, *[np.array([k], dtype=np.uint64) for k in keys])
    assert vectorised[0] == reference.uniform(seed, stream, *keys)


def test_reference_exercises_the_redraw_of_an_equal_rejected_text() -> None:
    """A prompt whose likely negatives equal the chosen text: the rejected is drawn among the
    others, in both implementations."""
    spec = [{"answers": [("f-v2-70b", "x"), ("f-v1-1b", "x"), ("f-v2-1b", "x"), ("f-v1-7b", "y")], "base": []}
            for _ in range(30)]
    inputs = make_inputs(spec)
    cfg = config(mix={"matrix": 1, "base": 0}, positive={"sources": ["newest-largest"]})
    pools = resolve_pools(cfg, models_frame())
    pairs = build_pairs(inputs, cfg, pools).pairs
    assert pairs.height == 30 and set(pairs["rejected_source"]) == {"f-v1-7b"}
    assert pairs.to_dicts() == reference.reference_pairs(inputs, cfg, pools)


@pytest.mark.parametrize("pairing", ["best-worst", "random"])
def test_reference_base_pairs_sit_on_both_sides_of_tau(pairing: str) -> None:
    spec = [{"answers": [], "base": [("w", 1), ("x", 2), ("y", 4), ("z", 5)]}]
    cfg = config(mix={"matrix": 0, "base": 1}, tau={"mode": "fixed", "value": 3.0}, max_pairs_per_prompt=2,
                 base_pairs={"pairing": pairing})
    rows = reference.reference_pairs(make_inputs(spec), cfg, resolve_pools(cfg, models_frame()))
    assert rows and all(r["chosen_score"] > 3.0 >= r["rejected_score"] for r in rows)
