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

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tso_data.build.config import ResolvedPools, RoundConfig
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
    """The 64-bit integer of a content-hash id (16 hex digits); other ids fall back to a hash."""
    return pl.col(col).str.to_integer(base=16, dtype=pl.UInt64, strict=False).fill_null(pl.col(col).hash(seed=7))


# -- candidates ----------------------------------------------------------------------------


def candidates(
    inputs: BuildInputs, config: RoundConfig, sources: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """All answers of ``sources`` for the round's prompts, as a slim numeric frame.

    Returns (candidates, texts, counts). ``texts`` holds prompt_id, source, target_id and
    turns; candidates hold cid (its row in ``texts``), pid and tid (integer keys of the
    prompt and answer ids), si (index into ``sources``), thash (hash of the turns) and
    score. Joins run on the slim frame; strings and texts are gathered by cid at the end.
    Answers with a number of turns different from the prompt's n_turns are dropped.
    """
    prompts = inputs.prompts
    if "split" in prompts.columns and config.split:
        prompts = prompts.filter(pl.col("split") == config.split)
    prompt_turns = prompts.select(pid=_id_key("prompt_id"), n_turns=pl.col("n_turns").cast(pl.Int64))
    frames = [
        inputs.answers.filter(pl.col("source").is_in(sources)).select(
            "prompt_id", "source", pl.col("answer_id").alias("target_id"), "turns"
        ),
        inputs.responses.filter(pl.col("model").is_in(sources)).select(
            "prompt_id", pl.col("model").alias("source"), pl.col("response_id").alias("target_id"), "turns"
        ),
    ]
    texts = pl.concat(frames, how="vertical_relaxed")
    slim = texts.select(
        pid=_id_key("prompt_id"),
        tid=_id_key("target_id"),
        si=pl.col("source").cast(pl.Enum(sources)).to_physical().cast(pl.UInt16),
        _len=pl.col("turns").list.len().cast(pl.Int64),
        thash=pl.col("turns").hash(seed=11),
    ).with_row_index("cid")
    turn_counts = prompt_turns.get_column("n_turns").unique()
    if turn_counts.len() == 1:  # the usual case: no join needed, a membership test will do
        in_split = pl.col("pid").is_in(prompt_turns.get_column("pid").implode())
        complete = pl.col("_len") == int(turn_counts[0])
        n_incomplete = int(slim.select((in_split & ~complete).sum()).item())
        cand = slim.filter(in_split & complete).drop("_len")
    else:
        cand = slim.join(prompt_turns, on="pid", how="inner")
        complete = pl.col("_len") == pl.col("n_turns")
        n_incomplete = int(cand.select((~complete).sum()).item())
        cand = cand.filter(complete).drop("n_turns", "_len")
    scores = inputs.scores.select(tid=_id_key("target_id"), score=pl.col("score").cast(pl.Float64))
    cand = cand.join(scores, on="tid", how="left")
    return cand, texts, {"answers with a wrong number of turns": n_incomplete}


# -- weighted draws -----------------------------------------------------------------------


def _draw_source_then_answer(
    pool: pl.DataFrame, weights: dict[int, float], seed: int, s_source: int, s_answer: int,
    group: list[str],
) -> pl.DataFrame:
    """For every ``group`` (prompt × draw index): a source by weight among those present in
    the group, then one of its answers uniformly. Returns one row of ``pool`` per group.

    The source draw is an exponential race: each source present gets Exp(1)/w, keyed on
    (group, source) so that all its rows share it; the smallest wins, with probability
    w/Σw over the sources present (weights renormalised per prompt). The answer is then the
    row with the smallest uniform key among the winner's rows.
    """
    keys = [pool[g] for g in group]
    pick = uniform(seed, s_answer, *keys, pool["tid"])
    pool = pool.with_columns(_u=pl.Series(pick))
    if len(weights) > 1:  # with one source in the pool, it always wins the race
        race = -np.log1p(-uniform(seed, s_source, *keys, pool["si"]))
        pool = pool.with_columns(_k=pl.Series(race) / pl.col("si").replace_strict(weights, return_dtype=pl.Float64))
        # two window minima (cheaper than a sort): the winning source's rows, then its answer.
        # Keys are 53-bit uniforms of distinct (slot, source) / (slot, answer) tuples: no ties.
        pool = pool.filter(pl.col("_k") == pl.col("_k").min().over(group)).drop("_k")
    return pool.filter(pl.col("_u") == pl.col("_u").min().over(group)).drop("_u")


def _draw_index(frame: pl.DataFrame, cap: int) -> pl.DataFrame:
    d = pl.DataFrame({"d": np.arange(cap, dtype=np.uint64)})
    return frame.join(d, how="cross")


@dataclass
class _Kind:
    """One kind of pair: its slots (prompt × draw index, the units a pair is drawn for)
    and the function that draws the pairs of a batch of slots."""

    name: str
    slots: pl.DataFrame  # pid, d
    draw: Callable[[pl.DataFrame], pl.DataFrame]
    stream: int


def matrix_kind(
    cand: pl.DataFrame, pools: ResolvedPools, config: RoundConfig, sources: list[str]
) -> tuple[_Kind, dict[str, int]]:
    w_pos = {sources.index(s): w for s, w in pools.positive.items()}
    w_neg = {sources.index(s): w for s, w in pools.negative.items()}
    cols = ["cid", "pid", "si", "tid", "thash", "score"]
    pos = cand.filter(pl.col("si").is_in(list(w_pos))).select(cols)
    neg = cand.filter(pl.col("si").is_in(list(w_neg))).select(cols)
    pos_prompts = pos.select("pid").unique()
    neg_prompts = neg.select("pid").unique()
    all_prompts = pl.concat([pos_prompts, neg_prompts]).unique()
    skipped = {
        "matrix: no positive answer": all_prompts.join(pos_prompts, on="pid", how="anti").height,
        "matrix: no negative answer": all_prompts.join(neg_prompts, on="pid", how="anti").height,
    }
    slots = _draw_index(pos_prompts.join(neg_prompts, on="pid", how="semi"), config.max_pairs_per_prompt)

    def draw(batch: pl.DataFrame) -> pl.DataFrame:
        p = pos.join(batch, on="pid", how="inner")  # adds d
        chosen = _draw_source_then_answer(p, w_pos, config.seed, _S_POS_SOURCE, _S_POS_ANSWER, ["pid", "d"])
        chosen = chosen.select("pid", "d", c_cid="cid", c_tid="tid", c_hash="thash", c_score="score")
        n = (
            neg.join(chosen.select("pid", "d", "c_hash"), on="pid", how="inner")
            .filter(pl.col("thash") != pl.col("c_hash"))
            .drop("c_hash")
        )
        rejected = _draw_source_then_answer(n, w_neg, config.seed, _S_NEG_SOURCE, _S_NEG_ANSWER, ["pid", "d"])
        return chosen.join(
            rejected.select("pid", "d", r_cid="cid", r_tid="tid", r_hash="thash", r_score="score"),
            on=["pid", "d"],
            how="inner",
        ).with_columns(kind=pl.lit("matrix"))

    return _Kind("matrix", slots, draw, _S_ORDER_MATRIX), skipped


def base_kind(
    cand: pl.DataFrame, pools: ResolvedPools, config: RoundConfig, sources: list[str]
) -> tuple[_Kind, float | None, dict[str, int]]:
    base_all = cand.filter(pl.col("si") == sources.index(pools.base_model))
    base = base_all.filter(pl.col("score").is_not_null())
    skipped = {
        "base: no scored base answer": base_all.select("pid").unique().join(base.select("pid").unique(), on="pid", how="anti").height,
    }
    taus, tau = tau_per_prompt(base.select(pl.col("pid").alias("prompt_id"), "score"), config.tau_mode, config.tau_value)  # type: ignore[arg-type]
    if tau is not None:  # one τ for all prompts (global mean or fixed)
        base = base.with_columns(tau=pl.lit(tau))
    else:
        base = base.join(taus.rename({"prompt_id": "pid"}), on="pid", how="inner")
    base = base.with_columns(above=pl.col("score") > pl.col("tau"))
    has = base.group_by("pid").agg(pl.col("above").sum().alias("a"), (~pl.col("above")).sum().alias("b"))
    skipped["base: no answer above τ"] = has.filter(pl.col("a") == 0).height
    skipped["base: no answer at or below τ"] = has.filter((pl.col("a") > 0) & (pl.col("b") == 0)).height
    cap = config.max_pairs_per_prompt
    has = has.filter((pl.col("a") > 0) & (pl.col("b") > 0))
    if config.pairing == "best-worst":
        # slot d pairs the d-th best above τ with the d-th worst at or below τ
        n_slots = pl.min_horizontal("a", "b", pl.lit(cap)).cast(pl.Int64)
        slots = has.select("pid", pl.int_ranges(0, n_slots, dtype=pl.UInt64).alias("d")).explode("d")
    else:
        slots = _draw_index(has.select("pid"), cap)
    cols = ["cid", "tid", "thash", "score"]

    def draw(batch: pl.DataFrame) -> pl.DataFrame:
        rows = base.join(batch.select("pid").unique(), on="pid", how="semi")
        if config.pairing == "best-worst" and cap == 1:
            # the best above τ and the worst at or below τ: window extrema, ties at random
            rows = rows.with_columns(_u=pl.Series(uniform(config.seed, _S_BASE_TIE, rows["tid"])), d=pl.lit(0, pl.UInt64))
            up, down = rows.filter(pl.col("above")), rows.filter(~pl.col("above"))
            ups = up.filter(pl.col("score") == pl.col("score").max().over("pid"))
            ups = ups.filter(pl.col("_u") == pl.col("_u").min().over("pid"))
            downs = down.filter(pl.col("score") == pl.col("score").min().over("pid"))
            downs = downs.filter(pl.col("_u") == pl.col("_u").min().over("pid"))
        elif config.pairing == "best-worst":
            rows = rows.with_columns(_u=pl.Series(uniform(config.seed, _S_BASE_TIE, rows["tid"])))
            ups = (
                rows.filter(pl.col("above")).sort("pid", "score", "_u", descending=[False, True, False])
                .with_columns(d=pl.int_range(pl.len(), dtype=pl.UInt64).over("pid"))
            )
            downs = (
                rows.filter(~pl.col("above")).sort("pid", "score", "_u")
                .with_columns(d=pl.int_range(pl.len(), dtype=pl.UInt64).over("pid"))
            )
            ups, downs = ups.join(batch, on=["pid", "d"], how="semi"), downs.join(batch, on=["pid", "d"], how="semi")
        else:
            ups = _uniform_pick(rows.filter(pl.col("above")).join(batch, on="pid"), config.seed, _S_BASE_POS)
            downs = _uniform_pick(rows.filter(~pl.col("above")).join(batch, on="pid"), config.seed, _S_BASE_NEG)
        pairs = ups.select("pid", "d", **{f"c_{c}": c for c in cols}).join(
            downs.select("pid", "d", **{f"r_{c}": c for c in cols}), on=["pid", "d"], how="inner"
        ).filter(pl.col("c_thash") != pl.col("r_thash"))
        return pairs.rename({"c_thash": "c_hash", "r_thash": "r_hash"}).with_columns(kind=pl.lit("base"))

    return _Kind("base", slots, draw, _S_ORDER_BASE), tau, skipped


def _draw_in_order(kind: _Kind, need: int | None, seed: int) -> tuple[pl.DataFrame, int]:
    """Draw pairs for the slots in selection order (first draws of every prompt before
    second draws, then a seeded random order) until ``need`` pairs exist: a draw depends
    only on its slot, so this gives exactly the pairs that drawing every slot and taking
    the first ``need`` would, at a fraction of the work. Returns (pairs, possible), where
    possible counts the slots left undrawn as successes (an upper bound)."""
    slots = kind.slots
    if slots.height == 0:
        return pl.DataFrame(), 0
    prio = uniform(seed, kind.stream, slots["pid"], slots["d"])
    slots = slots.with_columns(_p=pl.Series(prio)).sort("d", "_p")
    if need is None:
        drawn = _dedupe(kind.draw(slots.select("pid", "d")))
        return drawn.join(slots, on=["pid", "d"]), drawn.height
    drawn = pl.DataFrame()
    start = 0
    while start < slots.height and drawn.height < need:
        size = int((need - drawn.height) * 1.02) + 256
        batch = slots.slice(start, size)
        start += size
        new = kind.draw(batch.select("pid", "d")).join(batch, on=["pid", "d"])
        drawn = _dedupe(pl.concat([drawn, new], how="vertical_relaxed") if drawn.height else new)
    return drawn, drawn.height + max(0, slots.height - start)


def _uniform_pick(frame: pl.DataFrame, seed: int, stream: int) -> pl.DataFrame:
    u = uniform(seed, stream, frame["pid"], frame["d"], frame["tid"])
    return frame.with_columns(_v=pl.Series(u)).filter(pl.col("_v") == pl.col("_v").min().over("pid", "d")).drop("_v")


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
    assert n is not None
    n_matrix = int(round(n * mix["matrix"]))
    return {"matrix": n_matrix, "base": n - n_matrix}


def _dedupe(pairs: pl.DataFrame) -> pl.DataFrame:
    """The same (chosen, rejected) drawn twice for a prompt counts once (its first draw).

    A slot (pid, d) holds one pair, so the smallest d identifies the first draw; rows come
    back in no particular order (callers sort by selection order)."""
    if pairs.height == 0:
        return pairs
    return pairs.filter(pl.col("d") == pl.col("d").min().over("pid", "c_tid", "r_tid"))


def _select(pairs: pl.DataFrame, n: int) -> pl.DataFrame:
    """The first ``n`` pairs in selection order (``_p`` is the slot's priority)."""
    if pairs.height == 0 or n == 0:
        return pairs.head(0)
    return pairs.sort("d", "_p").head(n)


def build_pairs(inputs: BuildInputs, config: RoundConfig, pools: ResolvedPools) -> BuildResult:
    """The pairs of one round (no texts yet: see :func:`to_conversations`)."""
    want_base = config.mix_base > 0
    # base answers are always read: they give the score distances of the summary
    sources = sorted(set(pools.positive) | set(pools.negative) | {pools.base_model})
    cand, texts, skipped = candidates(inputs, config, sources)
    warnings = list(pools.warnings)
    kinds: list[_Kind] = []
    tau: float | None = None
    if config.mix_matrix > 0:
        m, sk = matrix_kind(cand, pools, config, sources)
        skipped.update(sk)
        kinds.append(m)
    if want_base:
        b, tau, sk = base_kind(cand, pools, config, sources)
        skipped.update(sk)
        kinds.append(b)
    need = _targets(config, {"matrix": 0, "base": 0}) if config.pairs is not None else None
    drawn: dict[str, pl.DataFrame] = {}
    available = {"matrix": 0, "base": 0}
    for kind in kinds:
        drawn[kind.name], available[kind.name] = _draw_in_order(kind, need[kind.name] if need else None, config.seed)
    requested = need if need is not None else _targets(config, available)
    chosen_frames = [_select(drawn[k], requested[k]) for k in drawn if drawn[k].height]
    for kind, n in requested.items():
        if available[kind] < n:
            warnings.append(
                f"fewer {kind} pairs than asked: {n} asked, only {available[kind]} possible "
                f"(built what is possible; see the skipped prompts in --dry-run)"
            )
    stats = (
        cand.group_by("si")
        .agg(pl.len().alias("answers"), pl.col("score").mean().alias("mean_score"),
             pl.col("score").is_not_null().sum().alias("scored"))
        .with_columns(source=pl.col("si").replace_strict(dict(enumerate(sources)), return_dtype=pl.String))
        .drop("si")
        .sort("source")
    )
    present = set(stats["source"])
    for source in sources:
        if source not in present and (want_base or source != pools.base_model):
            warnings.append(f"source {source!r} has no answers for the {config.split!r} prompts")
    cols = ["kind", "c_cid", "r_cid", "c_tid", "r_tid", "c_score", "r_score"]
    pairs = (
        pl.concat([f.select(cols) for f in chosen_frames], how="vertical_relaxed")
        if chosen_frames
        else pl.DataFrame()
    )
    result = BuildResult(
        pairs=pairs, tau=tau, requested=requested, available=available, skipped=skipped,
        warnings=warnings, candidates=stats,
    )
    result.pairs = _finish(pairs, texts)
    return result


def _finish(pairs: pl.DataFrame, texts: pl.DataFrame) -> pl.DataFrame:
    """Attach the target ids and turns of chosen and rejected."""
    if pairs.height == 0:
        return pl.DataFrame(
            schema={"prompt_id": pl.String, "kind": pl.String, "chosen_id": pl.String, "rejected_id": pl.String,
                    "chosen_source": pl.String, "rejected_source": pl.String, "chosen_score": pl.Float64,
                    "rejected_score": pl.Float64, "chosen_turns": pl.List(pl.String), "rejected_turns": pl.List(pl.String)}
        )
    c_idx = pairs["c_cid"].cast(pl.UInt32)
    r_idx = pairs["r_cid"].cast(pl.UInt32)
    if texts.n_chunks() > 1:  # one contiguous buffer makes the random gathers ~7x faster
        texts = texts.rechunk()
    # chosen and rejected texts differ: their text hashes differ (checked when drawing), and
    # equal texts always hash equal, so no text comparison is needed here.
    out = pl.DataFrame({
        "prompt_id": texts["prompt_id"].gather(c_idx),
        "kind": pairs["kind"],
        "chosen_id": texts["target_id"].gather(c_idx),
        "rejected_id": texts["target_id"].gather(r_idx),
        "chosen_source": texts["source"].gather(c_idx),
        "rejected_source": texts["source"].gather(r_idx),
        "chosen_score": pairs["c_score"].cast(pl.Float64),
        "rejected_score": pairs["r_score"].cast(pl.Float64),
        "chosen_turns": texts["turns"].gather(c_idx),
        "rejected_turns": texts["turns"].gather(r_idx),
    })
    return out
