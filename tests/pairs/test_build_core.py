"""Properties of the pure pair core (tso_data.pairs.core) on synthetic frames."""

from __future__ import annotations

import json

import polars as pl
import pytest
from build_frames import BASE, NEGATIVE, POSITIVE, config, make_inputs, models_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from tso_data import ids
from tso_data.ids import canonical_json
from tso_data.pairs.conversations import to_conversations
from tso_data.pairs.core import BuildInputs, build_pairs
from tso_data.pairs.pools import resolve_pools
from tso_data.pairs.snapshot import snapshot_table

TEXTS = st.sampled_from(["a", "b", "c", "same"])
SOURCES = st.sampled_from(sorted(POSITIVE | NEGATIVE | {"f-v3-7b"}))
PROMPT = st.fixed_dictionaries({
    "answers": st.lists(st.tuples(SOURCES, TEXTS), max_size=6),
    "base": st.lists(st.tuples(TEXTS, st.one_of(st.none(), st.integers(1, 5))), max_size=4),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.lists(PROMPT, min_size=1, max_size=8), cap=st.integers(1, 3), seed=st.integers(0, 2**31),
       pairing=st.sampled_from(["best-worst", "random"]), tau_mode=st.sampled_from(["global-mean", "prompt-mean"]))
def test_pair_invariants(spec, cap, seed, pairing, tau_mode) -> None:
    inputs = make_inputs(spec)
    if inputs.scores.height == 0:
        return
    cfg = config(max_pairs_per_prompt=cap, seed=seed, base_pairs={"pairing": pairing}, tau={"mode": tau_mode})
    pools = resolve_pools(cfg, models_frame())
    assert set(pools.positive) == POSITIVE and set(pools.negative) == NEGATIVE
    result = build_pairs(inputs, cfg, pools)
    pairs = result.pairs
    owners = pl.concat([
        inputs.answers.select(pl.col("answer_id").alias("id"), "prompt_id", "source", "turns"),
        inputs.responses.select(pl.col("response_id").alias("id"), "prompt_id", pl.col("model").alias("source"),
                                "turns"),
    ])
    owner = {r["id"]: r for r in owners.to_dicts()}
    score = dict(inputs.scores.iter_rows())
    base_scores = [s for p in spec for _, s in p["base"] if s is not None]
    for row in pairs.to_dicts():
        c, r = owner[row["chosen_id"]], owner[row["rejected_id"]]
        assert c["prompt_id"] == r["prompt_id"] == row["prompt_id"]
        assert c["turns"] == row["chosen_turns"] and r["turns"] == row["rejected_turns"]
        assert row["chosen_turns"] != row["rejected_turns"]
        assert (c["source"], r["source"]) == (row["chosen_source"], row["rejected_source"])
        if row["kind"] == "matrix":
            assert c["source"] in POSITIVE and r["source"] in NEGATIVE
        else:
            assert c["source"] == r["source"] == BASE
            cs, rs = score.get(row["chosen_id"]), score.get(row["rejected_id"])
            assert cs is not None and rs is not None  # never a missing or failed score
            assert (cs, rs) == (row["chosen_score"], row["rejected_score"])
            if tau_mode == "global-mean":
                tau = sum(base_scores) / len(base_scores)
                assert result.tau == pytest.approx(tau)
                assert cs > tau >= rs  # eqs. 7-8: > τ positive, ≤ τ negative
            else:
                assert cs > rs
    per_prompt = pairs.group_by("prompt_id", "kind").len()
    assert per_prompt.height == 0 or per_prompt["len"].max() <= cap
    assert pairs.select("chosen_id", "rejected_id").is_unique().all()
    again = build_pairs(inputs, cfg, pools).pairs
    assert again.sort("chosen_id", "rejected_id").equals(pairs.sort("chosen_id", "rejected_id"))


def test_best_worst_takes_extremes_and_random_stays_on_its_side() -> None:
    spec = [{"answers": [], "base": [("w", 1), ("x", 2), ("y", 4), ("z", 5), ("fail", None)]}]
    inputs = make_inputs(spec)
    cfg = config(mix={"matrix": 0, "base": 1}, tau={"mode": "fixed", "value": 3.0})
    pairs = build_pairs(inputs, cfg, resolve_pools(cfg, models_frame())).pairs
    assert pairs.select("chosen_turns", "rejected_turns").rows() == [(["z"], ["w"])]
    cfg2 = config(mix={"matrix": 0, "base": 1}, tau={"mode": "fixed", "value": 3.0}, max_pairs_per_prompt=2)
    pairs2 = build_pairs(inputs, cfg2, resolve_pools(cfg2, models_frame())).pairs
    assert sorted(pairs2.select("chosen_turns", "rejected_turns").rows()) == [(["y"], ["x"]), (["z"], ["w"])]


def _large_spec(n: int) -> list[dict]:
    return [
        {"answers": [("human", f"h{i}"), ("f-v2-70b", f"p{i}"), ("f-v1-1b", f"n1{i}"), ("f-v2-1b", f"n2{i}"),
                     ("f-v1-7b", f"n3{i}")],
         "base": [(f"b{i}-{k}", k) for k in range(1, 5)]}
        for i in range(n)
    ]


def test_source_frequencies_match_weights_chi_square() -> None:
    inputs = make_inputs(_large_spec(4000))
    weights = {"f-v1-1b": 1.0, "f-v2-1b": 2.0, "f-v1-7b": 5.0}
    cfg = config(mix={"matrix": 1, "base": 0}, negative={"sources": sorted(weights), "weights": weights},
                 positive={"sources": ["newest-largest", "human"], "weights": {"human": 3, "newest-largest": 1}})
    pairs = build_pairs(inputs, cfg, resolve_pools(cfg, models_frame())).pairs
    assert pairs.height == 4000
    neg = dict(pairs.group_by("rejected_source").len().iter_rows())
    observed = [neg[s] for s in sorted(weights)]
    expected = [4000 * weights[s] / 8 for s in sorted(weights)]
    assert stats.chisquare(observed, expected).pvalue > 0.001
    pos = dict(pairs.group_by("chosen_source").len().iter_rows())
    assert stats.chisquare([pos["human"], pos["f-v2-70b"]], [3000, 1000]).pvalue > 0.001


def test_weights_renormalise_over_sources_present() -> None:
    # half the prompts lack the heavy negative: there the light one must always be drawn
    spec = _large_spec(400)
    for p in spec[:200]:
        p["answers"] = [a for a in p["answers"] if a[0] not in ("f-v1-7b", "f-v2-1b")]
    inputs = make_inputs(spec)
    cfg = config(mix={"matrix": 1, "base": 0})
    pairs = build_pairs(inputs, cfg, resolve_pools(cfg, models_frame())).pairs
    lacking = {ids.prompt_id([{"role": "user", "content": f"prompt {i}"}]) for i in range(200)}
    sub = pairs.filter(pl.col("prompt_id").is_in(list(lacking)))
    assert sub.height == 200 and set(sub["rejected_source"]) == {"f-v1-1b"}


def test_kind_mix_and_shortfall() -> None:
    inputs = make_inputs(_large_spec(1000))
    cfg = config(pairs=1000, mix={"matrix": 0.3, "base": 0.7})
    result = build_pairs(inputs, cfg, resolve_pools(cfg, models_frame()))
    counts = result.counts
    sd = (1000 * 0.3 * 0.7) ** 0.5
    assert abs(counts["matrix"] - 300) <= 3 * sd and counts["matrix"] + counts["base"] == 1000
    big = config(pairs=5000)
    short = build_pairs(inputs, big, resolve_pools(big, models_frame()))
    assert short.counts == {"matrix": 1000, "base": 1000}
    assert any("fewer matrix pairs" in w for w in short.warnings)


def test_heldout_prompts_and_wrong_turn_counts_are_not_used() -> None:
    spec = _large_spec(20)
    for p in spec[:5]:
        p["split"] = "heldout"
    inputs = make_inputs(spec)
    cfg = config()
    pairs = build_pairs(inputs, cfg, resolve_pools(cfg, models_frame())).pairs
    heldout = {ids.prompt_id([{"role": "user", "content": f"prompt {i}"}]) for i in range(5)}
    assert pairs.height > 0 and not set(pairs["prompt_id"]) & heldout


def test_snapshot_is_deterministic_and_content_addressed(tmp_path) -> None:
    from tso_data.pairs.snapshot import write_snapshot_file

    inputs = make_inputs(_large_spec(300))
    cfg = config(pairs=200)
    paths = []
    for k in range(2):
        pairs = build_pairs(inputs, cfg, resolve_pools(cfg, models_frame())).pairs
        table, sid = snapshot_table(to_conversations(pairs, inputs.prompts), 1, cfg.to_dict())
        path = tmp_path / str(k) / f"{sid}.parquet"
        assert write_snapshot_file(table, path)
        assert not write_snapshot_file(table, path)  # never overwritten
        paths.append(path)
    assert paths[0].name == paths[1].name
    assert paths[0].read_bytes() == paths[1].read_bytes()
    other = config(pairs=200, seed=7)
    pairs = build_pairs(inputs, other, resolve_pools(other, models_frame())).pairs
    _, sid2 = snapshot_table(to_conversations(pairs, inputs.prompts), 1, other.to_dict())
    assert sid2 != paths[0].stem


@pytest.mark.parametrize("row_group_size", [65_536, 16])
def test_pipelined_snapshot_writes_the_one_table_file(tmp_path, monkeypatch, row_group_size) -> None:
    """write_snapshot (row groups built beside the writer, the id added to the footer at the
    end) gives the bytes and id of snapshot_table + write_snapshot_file, also when the rows
    span several row groups; the footer carries all of the snapshot's metadata."""
    from tso_data.pairs import snapshot
    from tso_data.pairs.snapshot import write_snapshot, write_snapshot_file

    monkeypatch.setitem(snapshot.WRITER_OPTIONS, "row_group_size", row_group_size)
    inputs = make_inputs(_large_spec(300))
    cfg = config(pairs=200)
    pairs = build_pairs(inputs, cfg, resolve_pools(cfg, models_frame())).pairs
    table, sid = snapshot_table(to_conversations(pairs, inputs.prompts), 1, cfg.to_dict())
    assert write_snapshot_file(table, tmp_path / "one" / f"{sid}.parquet")
    sid2, path, created, rows = write_snapshot(pairs, inputs.prompts, 1, cfg.to_dict(), tmp_path / "two")
    assert (sid2, path.name, created, rows) == (sid, f"{sid}.parquet", True, table.num_rows)
    assert path.read_bytes() == (tmp_path / "one" / f"{sid}.parquet").read_bytes()
    meta = snapshot.read_metadata(path)
    assert meta["tso.snapshot_id"] == sid and meta["tso.round"] == "1" and meta["tso.schema_version"] == "1"
    assert json.loads(meta["tso.config"]) == json.loads(canonical_json(cfg.to_dict()))
    assert [p.name for p in (tmp_path / "two").iterdir()] == [path.name]  # no temporary file left
    assert write_snapshot(pairs, inputs.prompts, 1, cfg.to_dict(), tmp_path / "two")[2] is False  # never overwritten


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), cap=st.sampled_from([1, 2]))
def test_row_order_of_the_inputs_changes_nothing(tmp_path, seed: int, cap: int) -> None:
    """Catalog reads return rows in no fixed order, and prompt codes are row numbers: the
    pairs, their order and the snapshot's bytes must not depend on it (nor on a prompt row
    read twice)."""
    from tso_data.pairs.snapshot import write_snapshot

    inputs = make_inputs(_large_spec(120))
    cfg = config(pairs=150, max_pairs_per_prompt=cap)
    pools = resolve_pools(cfg, models_frame())

    def shuffled(frame: pl.DataFrame, k: int) -> pl.DataFrame:
        return frame.sample(fraction=1.0, shuffle=True, seed=(seed + k) % 2**32)

    prompts = shuffled(inputs.prompts, 0)
    other = BuildInputs(
        prompts=pl.concat([prompts, prompts.head(3)]),  # three prompt rows read twice
        answers=shuffled(inputs.answers, 1), responses=shuffled(inputs.responses, 2), scores=shuffled(inputs.scores, 3),
    )
    a, b = build_pairs(inputs, cfg, pools).pairs, build_pairs(other, cfg, pools).pairs
    assert a.height > 0 and a.equals(b)
    ids_a = write_snapshot(a, inputs.prompts, 1, cfg.to_dict(), tmp_path / f"a{seed}")
    ids_b = write_snapshot(b, other.prompts.unique("prompt_id"), 1, cfg.to_dict(), tmp_path / f"b{seed}")
    assert ids_a[0] == ids_b[0] and ids_a[1].read_bytes() == ids_b[1].read_bytes()
