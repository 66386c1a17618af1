"""The pure core of `tso-data build`: catalog frames + resolved config → pairs frame.

No I/O here. Everything is vectorised with Polars; randomness is *counter-based*: every
random number is a SplitMix64 hash of (seed, stream, integer keys taken from the content-hash
ids), so a draw depends only on what is drawn and never on row order, thread scheduling or
how the inputs were partitioned. Same inputs + config + seed → the same pairs.

Semantics (DESIGN.md §1; README "build" gives the paper's equation numbers):

*Matrix pairs.* For a prompt, the chosen answer comes from the positive pool M_w and the
rejected from the negative pool M_l. In each pool a *source* is drawn with probability
proportional to its weight among the sources that have an answer for that prompt (weights
renormalised over those), then one of that source's answers uniformly. Negatives whose text
equals the chosen text are removed before the rejected draw.

*Base pairs.* The base model's scored responses are split at τ: score > τ is positive,
score ≤ τ negative (eqs. 7–8). ``best-worst`` pairs the k-th best positive with the k-th
worst negative (k < cap); ``random`` draws one of each side uniformly, ``cap`` times.
A response with a missing or failed score is never used.

*Selection.* Each kind gets ``round(N·mix)`` pairs taken in random order from the draws
(first draws of every prompt before second draws, so pairs spread over prompts); at most
``max_pairs_per_prompt`` pairs of each kind per prompt; identical pairs are drawn once.
If a kind has fewer draws than asked, all are kept and the shortfall is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tso_data.build.config import ResolvedPools, RoundConfig
from tso_data.errors import TSODataError
from tso_data.scoring import tau_per_prompt

# Random streams: one per kind of draw, so changing one part never shifts another.
_S_POS_SOURCE, _S_POS_ANSWER, _S_NEG_SOURCE, _S_NEG_ANSWER = 1, 2, 3, 4
_S_BASE_TIE, _S_BASE_POS, _S_BASE_NEG, _S_ORDER_MATRIX, _S_ORDER_BASE = 5, 6, 7, 8, 9

PAIR_KEY_COLUMNS = [
    "prompt_id", "kind", "chosen_id", "rejected_id", "chosen_source", "rejected_source",
    "chosen_score", "rejected_score",
]


@dataclass(frozen=True)
class BuildInputs:
    """Catalog tables as Polars frames (only the columns named are read).

    - ``prompts``: prompt_id, messages (list of {role, content}), n_turns, split
    - ``answers``: answer_id, prompt_id, source, turns
    - ``responses``: response_id, prompt_id, model, turns
    - ``scores``: target_id, score (one aggregated score per target, :mod:`tso_data.scoring`)
    """

    prompts: pl.DataFrame
    answers: pl.DataFrame
    responses: pl.DataFrame
    scores: pl.DataFrame


@dataclass
class BuildResult:
    pairs: pl.DataFrame  # PAIR_KEY_COLUMNS; one row per pair, not yet turned into messages
    tau: float | None  # the global τ (None for per-prompt τ or when no base pairs are asked)
    requested: dict[str, int]
    available: dict[str, int]
    skipped: dict[str, int]  # reason -> number of prompts
    warnings: list[str] = field(default_factory=list)
    candidates: pl.DataFrame | None = None  # per-source answer counts and mean scores

    @property
    def counts(self) -> dict[str, int]:
        by_kind = dict(self.pairs.group_by("kind").len().iter_rows())
        return {"matrix": int(by_kind.get("matrix", 0)), "base": int(by_kind.get("base", 0))}


# -- randomness ----------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniform(seed: int, stream: int, *keys: pl.Series | np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) numbers, one per row, a pure function of (seed, stream, keys).

    >>> a = uniform(43, 1, np.array([1, 2, 3], dtype=np.uint64))
    >>> b = uniform(43, 1, np.array([3, 2, 1], dtype=np.uint64))
    >>> bool(a[0] == b[2]) and bool(((a >= 0) & (a < 1)).all())
    True
    """
    with np.errstate(over="ignore"):
        h = _splitmix(np.array([seed * 1_000_003 + stream], dtype=np.uint64))
        for key in keys:
            arr = key.to_numpy() if isinstance(key, pl.Series) else key
            h = _splitmix(h ^ np.asarray(arr).astype(np.uint64, copy=False))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _id_key(col: str) -> pl.Expr:
    """A 60-bit integer from a content-hash id (hex), falling back to a hash for other ids."""
    return (
        pl.col(col).str.slice(0, 15).str.to_integer(base=16, dtype=pl.UInt64, strict=False)
        .fill_null(pl.col(col).hash(seed=7))
    )


# -- candidates ----------------------------------------------------------------------------


def candidates(inputs: BuildInputs, config: RoundConfig, sources: set[str]) -> tuple[pl.DataFrame, dict[str, int]]:
    """All answers of ``sources`` for the round's prompts, with ids as integer keys.

    Columns: cid (row index, for gathering texts), prompt_id, pid, source, target_id, tid,
    thash (text hash), score, turns. Answers with a number of turns different from the
    prompt's n_turns are dropped (counted in the returned dict).
    """
    prompts = inputs.prompts
    if "split" in prompts.columns and config.split:
        prompts = prompts.filter(pl.col("split") == config.split)
    prompt_turns = prompts.select("prompt_id", pl.col("n_turns").cast(pl.Int64))
    src = list(sources)
    frames = [
        inputs.answers.filter(pl.col("source").is_in(src)).select(
            "prompt_id", "source", pl.col("answer_id").alias("target_id"), "turns"
        ),
        inputs.responses.filter(pl.col("model").is_in(src)).select(
            "prompt_id", pl.col("model").alias("source"), pl.col("response_id").alias("target_id"), "turns"
        ),
    ]
    cand = pl.concat(frames, how="vertical_relaxed").join(prompt_turns, on="prompt_id", how="inner")
    complete = pl.col("turns").list.len().cast(pl.Int64) == pl.col("n_turns")
    n_incomplete = int(cand.select((~complete).sum()).item())
    cand = (
        cand.filter(complete)
        .join(inputs.scores.select("target_id", pl.col("score").cast(pl.Float64)), on="target_id", how="left")
        .with_columns(
            pid=_id_key("prompt_id"),
            tid=_id_key("target_id"),
            thash=pl.col("turns").hash(seed=11),
        )
        .with_row_index("cid")
        .drop("n_turns")
    )
    return cand, {"answers with a wrong number of turns": n_incomplete}


# -- weighted draws -----------------------------------------------------------------------


def _draw_source_then_answer(
    pool: pl.DataFrame, weights: dict[str, float], seed: int, s_source: int, s_answer: int,
    group: list[str],
) -> pl.DataFrame:
    """For every ``group`` (e.g. prompt × draw index): a source by weight among those present
    in the group (an exponential race: min of Exp(1)/w wins with probability w/Σw), then one
    of its answers uniformly. Returns one row of ``pool`` per group."""
    order = sorted(weights)
    w = pl.DataFrame({"source": order, "_w": [weights[s] for s in order], "_si": list(range(len(order)))},
                     schema={"source": pl.String, "_w": pl.Float64, "_si": pl.UInt64})
    per_source = pool.select(*group, "source").unique().join(w, on="source", how="inner")
    keys = [per_source[g] for g in group if g != "source"]
    u = uniform(seed, s_source, *keys, per_source["_si"])
    per_source = per_source.with_columns(_k=pl.Series(-np.log1p(-u)) / pl.col("_w"))
    winner = per_source.group_by(group).agg(pl.col("source").get(pl.col("_k").arg_min()))
    chosen_rows = pool.join(winner, on=[*group, "source"], how="inner")
    u2 = uniform(seed, s_answer, *[chosen_rows[g] for g in group if g != "source"], chosen_rows["tid"])
    chosen_rows = chosen_rows.with_columns(_u=pl.Series(u2))
    return chosen_rows.filter(pl.col("_u") == pl.col("_u").min().over(group)).unique(subset=group, keep="first").drop("_u")


def _draw_index(frame: pl.DataFrame, cap: int) -> pl.DataFrame:
    d = pl.DataFrame({"d": np.arange(cap, dtype=np.uint64)})
    return frame.join(d, how="cross")


def matrix_pairs(cand: pl.DataFrame, pools: ResolvedPools, config: RoundConfig) -> tuple[pl.DataFrame, dict[str, int]]:
    cols = ["cid", "prompt_id", "pid", "source", "tid", "thash", "score"]
    pos = cand.filter(pl.col("source").is_in(list(pools.positive))).select(cols)
    neg = cand.filter(pl.col("source").is_in(list(pools.negative))).select(cols)
    pos_prompts = pos.select("pid").unique()
    neg_prompts = neg.select("pid").unique()
    all_prompts = pl.concat([pos_prompts, neg_prompts]).unique()
    skipped = {
        "matrix: no positive answer": all_prompts.join(pos_prompts, on="pid", how="anti").height,
        "matrix: no negative answer": all_prompts.join(neg_prompts, on="pid", how="anti").height,
    }
    eligible = pos_prompts.join(neg_prompts, on="pid", how="semi")
    pos = _draw_index(pos.join(eligible, on="pid", how="semi"), config.max_pairs_per_prompt)
    chosen = _draw_source_then_answer(pos, pools.positive, config.seed, _S_POS_SOURCE, _S_POS_ANSWER, ["pid", "d"])
    chosen = chosen.select("pid", "d", "prompt_id", c_cid="cid", c_tid="tid", c_source="source",
                           c_hash="thash", c_score="score")
    neg = (
        _draw_index(neg.join(eligible, on="pid", how="semi"), config.max_pairs_per_prompt)
        .join(chosen.select("pid", "d", "c_hash"), on=["pid", "d"], how="inner")
        .filter(pl.col("thash") != pl.col("c_hash"))
        .drop("c_hash")
    )
    rejected = _draw_source_then_answer(neg, pools.negative, config.seed, _S_NEG_SOURCE, _S_NEG_ANSWER, ["pid", "d"])
    pairs = chosen.join(
        rejected.select("pid", "d", r_cid="cid", r_tid="tid", r_source="source", r_hash="thash", r_score="score"),
        on=["pid", "d"],
        how="inner",
    )
    skipped["matrix: every negative equals the chosen text"] = (
        chosen.filter(pl.col("d") == 0).join(pairs.filter(pl.col("d") == 0), on="pid", how="anti").height
    )
    return pairs.with_columns(kind=pl.lit("matrix")), skipped


def base_pairs(cand: pl.DataFrame, pools: ResolvedPools, config: RoundConfig) -> tuple[pl.DataFrame, float | None, dict[str, int]]:
    base_all = cand.filter(pl.col("source") == pools.base_model)
    base = base_all.filter(pl.col("score").is_not_null())
    skipped = {
        "base: no scored base answer": base_all.select("pid").unique().join(base.select("pid").unique(), on="pid", how="anti").height,
    }
    taus, tau = tau_per_prompt(base.select("prompt_id", "score"), config.tau_mode, config.tau_value)  # type: ignore[arg-type]
    base = base.join(taus, on="prompt_id", how="inner").with_columns(
        above=pl.col("score") > pl.col("tau"),
        _u=pl.Series(uniform(config.seed, _S_BASE_TIE, base["tid"])) if base.height else pl.lit(0.0),
    )
    has = base.group_by("pid").agg(pl.col("above").any().alias("a"), (~pl.col("above")).any().alias("b"))
    skipped["base: no answer above τ"] = has.filter(~pl.col("a")).height
    skipped["base: no answer at or below τ"] = has.filter(pl.col("a") & ~pl.col("b")).height
    cap = config.max_pairs_per_prompt
    cols = ["cid", "tid", "source", "thash", "score"]
    if config.pairing == "best-worst":
        # k-th best above τ against k-th worst at or below τ (ties broken at random)
        ups = (
            base.filter(pl.col("above")).sort("pid", "score", "_u", descending=[False, True, False])
            .with_columns(d=pl.int_range(pl.len(), dtype=pl.UInt64).over("pid")).filter(pl.col("d") < cap)
        )
        downs = (
            base.filter(~pl.col("above")).sort("pid", "score", "_u")
            .with_columns(d=pl.int_range(pl.len(), dtype=pl.UInt64).over("pid")).filter(pl.col("d") < cap)
        )
    else:
        ups = _uniform_pick(_draw_index(base.filter(pl.col("above")), cap), config.seed, _S_BASE_POS)
        downs = _uniform_pick(_draw_index(base.filter(~pl.col("above")), cap), config.seed, _S_BASE_NEG)
    pairs = ups.select("pid", "d", "prompt_id", **{f"c_{c}": c for c in cols}).join(
        downs.select("pid", "d", **{f"r_{c}": c for c in cols}), on=["pid", "d"], how="inner"
    ).filter(pl.col("c_thash") != pl.col("r_thash"))
    pairs = pairs.rename({"c_thash": "c_hash", "r_thash": "r_hash"}).with_columns(kind=pl.lit("base"))
    return pairs, tau, skipped


def _uniform_pick(frame: pl.DataFrame, seed: int, stream: int) -> pl.DataFrame:
    u = uniform(seed, stream, frame["pid"], frame["d"], frame["tid"])
    return (
        frame.with_columns(_v=pl.Series(u))
        .filter(pl.col("_v") == pl.col("_v").min().over("pid", "d"))
        .unique(subset=["pid", "d"], keep="first")
        .drop("_v")
    )


# -- selection -----------------------------------------------------------------------------


def _targets(config: RoundConfig, available: dict[str, int]) -> dict[str, int]:
    """Pairs to take per kind: round(N·mix); N = None → the largest N the mix allows.

    >>> from types import SimpleNamespace as C
    >>> _targets(C(pairs=10, mix_matrix=0.5, mix_base=0.5), {"matrix": 100, "base": 100})
    {'matrix': 5, 'base': 5}
    >>> _targets(C(pairs=None, mix_matrix=0.5, mix_base=0.5), {"matrix": 100, "base": 30})
    {'matrix': 30, 'base': 30}
    """
    mix = {"matrix": config.mix_matrix, "base": config.mix_base}
    n = config.pairs
    if n is None:
        n = min(int(available[k] / m + 1e-9) for k, m in mix.items() if m > 0)
    n_matrix = int(round(n * mix["matrix"]))
    return {"matrix": n_matrix, "base": n - n_matrix}


def _dedupe(pairs: pl.DataFrame) -> pl.DataFrame:
    """The same (chosen, rejected) drawn twice for a prompt counts once (its first draw)."""
    return pairs.sort("pid", "d").unique(subset=["pid", "c_tid", "r_tid"], keep="first", maintain_order=True)


def _select(pairs: pl.DataFrame, n: int, seed: int, stream: int) -> pl.DataFrame:
    if pairs.height == 0 or n == 0:
        return pairs.head(0)
    prio = uniform(seed, stream, pairs["pid"], pairs["d"])
    return pairs.with_columns(_p=pl.Series(prio)).sort("d", "_p").head(n).drop("_p")


def build_pairs(inputs: BuildInputs, config: RoundConfig, pools: ResolvedPools) -> BuildResult:
    """The pairs of one round (no texts yet: see :func:`to_conversations`)."""
    sources = set(pools.positive) | set(pools.negative)
    want_base = config.mix_base > 0
    sources.add(pools.base_model)  # base answers also give the score distances of the summary
    cand, skipped = candidates(inputs, config, sources)
    warnings = list(pools.warnings)
    frames, available = [], {"matrix": 0, "base": 0}
    tau: float | None = None
    if config.mix_matrix > 0:
        m, sk = matrix_pairs(cand, pools, config)
        skipped.update(sk)
        m = _dedupe(m)
        available["matrix"] = m.height
        frames.append(m)
    if want_base:
        b, tau, sk = base_pairs(cand, pools, config)
        skipped.update(sk)
        b = _dedupe(b)
        available["base"] = b.height
        frames.append(b)
    requested = _targets(config, available)
    chosen_frames = []
    for frame in frames:
        kind = frame["kind"][0] if frame.height else None
        if kind is None:
            continue
        stream = _S_ORDER_MATRIX if kind == "matrix" else _S_ORDER_BASE
        chosen_frames.append(_select(frame, requested[kind], config.seed, stream))
    for kind, n in requested.items():
        if available[kind] < n:
            warnings.append(
                f"fewer {kind} pairs than asked: {n} asked, only {available[kind]} possible "
                f"(built what is possible; see the skipped prompts in --dry-run)"
            )
    for source in sorted(sources if want_base else sources - {pools.base_model}):
        if cand.filter(pl.col("source") == source).height == 0:
            warnings.append(f"source {source!r} has no answers for the {config.split!r} prompts")
    cols = ["prompt_id", "kind", "c_cid", "r_cid", "c_tid", "r_tid", "c_source", "r_source", "c_score", "r_score"]
    pairs = (
        pl.concat([f.select(cols) for f in chosen_frames], how="vertical_relaxed")
        if chosen_frames
        else pl.DataFrame(schema={c: pl.String for c in cols})
    )
    stats = (
        cand.group_by("source")
        .agg(pl.len().alias("answers"), pl.col("score").mean().alias("mean_score"),
             pl.col("score").is_not_null().sum().alias("scored"),
             pl.col("prompt_id").n_unique().alias("prompts"))
        .sort("source")
    )
    result = BuildResult(
        pairs=pairs, tau=tau, requested=requested, available=available, skipped=skipped,
        warnings=warnings, candidates=stats,
    )
    result.pairs = _finish(pairs, cand)
    return result


def _finish(pairs: pl.DataFrame, cand: pl.DataFrame) -> pl.DataFrame:
    """Attach target ids and turns; guard: never equal texts (exact comparison)."""
    if pairs.height == 0:
        return pl.DataFrame(
            schema={"prompt_id": pl.String, "kind": pl.String, "chosen_id": pl.String, "rejected_id": pl.String,
                    "chosen_source": pl.String, "rejected_source": pl.String, "chosen_score": pl.Float64,
                    "rejected_score": pl.Float64, "chosen_turns": pl.List(pl.String), "rejected_turns": pl.List(pl.String)}
        )
    c_idx = pairs["c_cid"].cast(pl.UInt32)
    r_idx = pairs["r_cid"].cast(pl.UInt32)
    out = pl.DataFrame({
        "prompt_id": pairs["prompt_id"],
        "kind": pairs["kind"],
        "chosen_id": cand["target_id"].gather(c_idx),
        "rejected_id": cand["target_id"].gather(r_idx),
        "chosen_source": pairs["c_source"],
        "rejected_source": pairs["r_source"],
        "chosen_score": pairs["c_score"].cast(pl.Float64),
        "rejected_score": pairs["r_score"].cast(pl.Float64),
        "chosen_turns": cand["turns"].gather(c_idx),
        "rejected_turns": cand["turns"].gather(r_idx),
    })
    equal = out.filter(pl.col("chosen_turns") == pl.col("rejected_turns")).height
    if equal:  # only a 64-bit hash collision could get here
        raise TSODataError(f"internal error: {equal} pairs with equal texts")
    return out
