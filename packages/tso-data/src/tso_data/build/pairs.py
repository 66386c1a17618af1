"""The pure core of `tso-data build`: catalog frames + resolved config → pairs frame.

No I/O here. Everything is vectorised (Polars, NumPy) on integer keys: prompts get dense
codes, pools are dense (prompt × source) arrays, and strings are gathered once at the end.
Randomness is *counter-based*: every random number is a SplitMix64 hash of (seed, stream,
integer keys taken from the content-hash ids), so a draw depends only on what is drawn and
never on row order, codes, thread scheduling or how the inputs were partitioned. Same
inputs + config + seed → the same pairs.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from tso_data.build.config import ResolvedPools, RoundConfig
from tso_data.ids import sql_hash
from tso_data.scoring import tau_per_prompt

# Random streams: one per kind of draw, so changing one part never shifts another.
_S_POS_SOURCE, _S_POS_ANSWER, _S_NEG_SOURCE, _S_NEG_ANSWER = 1, 2, 3, 4
_S_BASE_TIE, _S_BASE_POS, _S_BASE_NEG, _S_ORDER_MATRIX, _S_ORDER_BASE = 5, 6, 7, 8, 9

PAIR_KEY_COLUMNS = [
    "pair_id", "prompt_id", "kind", "chosen_id", "rejected_id", "chosen_source", "rejected_source",
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
    pairs: pl.DataFrame  # PAIR_KEY_COLUMNS + chosen/rejected turns; one row per pair, in selection order
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
    """SplitMix64's finaliser of ``x + golden``, as a new array (in place on one copy: the
    arrays are millions long, and every temporary is fresh memory)."""
    z = x + _GOLDEN
    t = np.right_shift(z, np.uint64(30))
    with np.errstate(over="ignore"):
        z ^= t
        z *= _M1
        np.right_shift(z, np.uint64(27), out=t)
        z ^= t
        z *= _M2
    np.right_shift(z, np.uint64(31), out=t)
    z ^= t
    return z


def _chain(seed: int, stream: int, *keys: pl.Series | np.ndarray | int) -> np.ndarray:
    """The 64-bit hash behind :func:`uniform`; ``_chain(..., a, b)`` extended by a key ``c``
    is ``_splitmix(h ^ c)``, so a prefix shared by many draws is hashed once."""
    with np.errstate(over="ignore"):
        # modulo 2^64, as the rest of the hash: any seed up to 2^63 - 1 (seeds below ~9e12, so
        # every snapshot built so far, give the same numbers as before)
        h = _splitmix(np.array([(seed * 1_000_003 + stream) & 0xFFFF_FFFF_FFFF_FFFF], dtype=np.uint64))
        for key in keys:
            arr = key.to_numpy() if isinstance(key, pl.Series) else key
            h = _splitmix(h ^ np.asarray(arr).astype(np.uint64, copy=False))
    return h


def _unit(h: np.ndarray) -> np.ndarray:
    u = np.right_shift(h, np.uint64(11)).astype(np.float64)
    u *= 1.0 / (1 << 53)
    return u


def uniform(seed: int, stream: int, *keys: pl.Series | np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) numbers, one per row, a pure function of (seed, stream, keys).

    >>> a = uniform(43, 1, np.array([1, 2, 3], dtype=np.uint64))
    >>> b = uniform(43, 1, np.array([3, 2, 1], dtype=np.uint64))
    >>> bool(a[0] == b[2]) and bool(((a >= 0) & (a < 1)).all())
    True
    """
    return _unit(_chain(seed, stream, *keys))


def _id_key(ids: pl.Series) -> pl.Series:
    """The 64-bit integer of a content-hash id (16 hex digits); other ids fall back to a hash
    (computed only when some id is not hex: an expression would hash every row).

    >>> _id_key(pl.Series(["00000000000000ff", "not hex"])).to_list()[0]
    255
    """
    return _fill_key(ids.str.to_integer(base=16, dtype=pl.UInt64, strict=False), ids)


def _hex_key(ids: pl.Expr) -> pl.Expr:
    """:func:`_id_key` as an expression, without the fallback (see :func:`_fill_key`)."""
    return ids.str.to_integer(base=16, dtype=pl.UInt64, strict=False)


def _fill_key(keys: pl.Series, ids: pl.Series) -> pl.Series:
    """Keys of :func:`_hex_key` with the ids that are not hex hashed in."""
    return keys if keys.null_count() == 0 else keys.fill_null(ids.hash(seed=7))


# -- candidates ----------------------------------------------------------------------------


@dataclass
class Candidates:
    """The answers a round may use, as integer columns; strings stay in ``texts``.

    ``rows``: cid (row in ``texts``), pc (prompt code: the prompt's row in ``prompt_ids``),
    si (index into ``sources``), tid (integer key of the answer id), score (null = unscored
    or failed). ``pid[pc]`` is the integer key of the prompt id: random draws are keyed on
    ids, never on codes, so codes (which depend on row order) cannot change a draw.
    """

    rows: pl.DataFrame
    texts: pl.DataFrame  # prompt_id, source, target_id, turns
    sources: list[str]
    pid: np.ndarray  # uint64 per prompt code
    prompt_ids: pl.Series

    @property
    def n_codes(self) -> int:
        return len(self.pid)

    @cached_property
    def turns(self) -> pl.Series:
        # one contiguous buffer: random gathers from a chunked column are several times slower
        return self.texts.get_column("turns").rechunk()

    @cached_property
    def target_ids(self) -> pl.Series:
        return self.texts.get_column("target_id").rechunk()

    def same_text(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Whether texts[a].turns == texts[b].turns, row by row."""
        ta = self.turns.gather(pl.Series(a, dtype=pl.UInt32))
        tb = self.turns.gather(pl.Series(b, dtype=pl.UInt32))
        if ta.len() and max(ta.list.len().max(), tb.list.len().max()) == 1:  # type: ignore[type-var]
            same = ta.list.first().eq_missing(tb.list.first())  # single turns: compare the strings
        else:
            same = ta.eq_missing(tb)
        return same.to_numpy()


def candidates(
    inputs: BuildInputs, config: RoundConfig, sources: list[str], base_model: str
) -> tuple[Candidates, dict[str, int]]:
    """All answers of ``sources`` to the round's prompts (answers whose number of turns
    differs from the prompt's n_turns are dropped and counted)."""
    prompts = inputs.prompts
    if "split" in prompts.columns and config.split:
        prompts = prompts.filter(pl.col("split") == config.split)
    texts = pl.concat([
        inputs.answers.select("prompt_id", "source", pl.col("answer_id").alias("target_id"), "turns"),
        inputs.responses.select("prompt_id", pl.col("model").alias("source"), pl.col("response_id").alias("target_id"), "turns"),
    ], how="vertical_relaxed")
    # every per-answer column in one parallel pass; strings are never touched again
    slim = texts.select(
        tid=_hex_key(pl.col("target_id")),
        pk=_hex_key(pl.col("prompt_id")),
        si=pl.col("source").cast(pl.Enum(sources), strict=False).to_physical().cast(pl.UInt16),
        n=pl.col("turns").list.len().cast(pl.Int32),
    )
    tid = _fill_key(slim["tid"], texts.get_column("target_id")).to_numpy()
    si = slim["si"].fill_null(len(sources)).to_numpy()  # len(sources): not a source
    # a prompt's code is its row in ``prompts``: the code join beside the score join
    prompt_keys = _id_key(prompts.get_column("prompt_id"))
    if prompt_keys.n_unique() != prompt_keys.len():  # the catalog keeps prompts unique; a frame may not
        prompts = prompts.unique("prompt_id", keep="first", maintain_order=True)
        prompt_keys = _id_key(prompts.get_column("prompt_id"))
    pid = prompt_keys.to_numpy()
    with ThreadPoolExecutor(max_workers=2) as threads:
        coding = threads.submit(_prompt_codes, pid, _fill_key(slim["pk"], texts.get_column("prompt_id")))
        score = _scores_of(si, tid, _score_keys(inputs.scores), sources.index(base_model))
        # the score column (NaN → null) beside the mask below, which needs the codes
        scores = threads.submit(pl.Series, "score", score, nan_to_null=True)
        pc = coding.result()
        n_turns = np.full(len(pid) + 1, -1, dtype=np.int32)  # the last code: not a prompt of the round
        n_turns[:-1] = prompts.get_column("n_turns").cast(pl.Int32).to_numpy()
        answer_turns = n_turns[pc]
        used = (answer_turns >= 0) & (si < len(sources))
        complete = answer_turns == slim["n"].to_numpy()
        n_incomplete = int((used & ~complete).sum())
        keep = used & complete
        if not keep.all():
            cid = np.flatnonzero(keep)
            pc, si, tid = pc[cid], si[cid], tid[cid]
            score_col = scores.result().gather(pl.Series(cid))
        else:  # the usual case: every answer is used, nothing to gather
            cid = np.arange(len(keep), dtype=np.uint32)
            score_col = scores.result()
    rows = pl.DataFrame({
        "cid": cid.astype(np.uint32, copy=False),
        "pc": pc.astype(np.uint32, copy=False),
        "si": si.astype(np.uint16, copy=False),
        "tid": tid,
        "score": score_col,
    })
    if len(pid) == 0:  # one spare code, so that every per-code array has a row
        pid = np.zeros(1, dtype=np.uint64)
    cand = Candidates(rows, texts, sources, pid, prompts.get_column("prompt_id").rechunk())
    return cand, {"answers with a wrong number of turns": n_incomplete}


def _prompt_codes(prompt_keys: np.ndarray, answer_prompt_keys: pl.Series) -> np.ndarray:
    """Each answer's prompt code (its prompt's row in the prompts frame; ``len(prompt_keys)``
    when the prompt is not one of the round's), by an integer join in place of a join on
    strings. Codes depend on row order, so they never key a draw."""
    table = pl.LazyFrame({"pk": prompt_keys, "pc": np.arange(len(prompt_keys), dtype=np.uint32)})
    found = pl.LazyFrame({"pk": answer_prompt_keys}).with_row_index("row").join(table, on="pk", how="inner").collect()
    pc = np.full(answer_prompt_keys.len(), len(prompt_keys), dtype=np.uint32)
    pc[found["row"].to_numpy()] = found["pc"].to_numpy()
    return pc


def _score_keys(scores: pl.DataFrame) -> pl.DataFrame:
    """The scores table keyed by integer answer key: tid, score (NaN for a null score)."""
    return pl.DataFrame({
        "tid": _id_key(scores.get_column("target_id")),
        "score": scores.get_column("score").cast(pl.Float64).fill_null(np.nan),
    })


def _scores_of(si: np.ndarray, tid: np.ndarray, left: pl.DataFrame, base_si: int) -> np.ndarray:
    """Each row's score (NaN where unscored), by inner joins of :func:`_score_keys`'s table,
    scattered back by row.

    Judges score the base model's answers above all, so those rows are matched first and
    the other rows only with the scores left over: most builds probe a third of the rows."""
    out = np.full(len(si), np.nan)
    for is_base in (True, False):
        if left.height == 0:
            break
        rows = np.flatnonzero(si == base_si) if is_base else np.flatnonzero(si != base_si)
        found = pl.LazyFrame({"tid": tid[rows], "row": rows}).join(left.lazy(), on="tid", how="inner").collect()
        out[found["row"].to_numpy()] = found["score"].to_numpy()
        # one score per target and one row per answer id, so all matched iff as many found
        left = left.head(0) if found.height >= left.height else left.join(found.select("tid"), on="tid", how="anti")
    return out


# -- weighted draws -----------------------------------------------------------------------


def _draw_source_then_answer(
    pool: pl.DataFrame, weights: dict[int, float], seed: int, s_source: int, s_answer: int,
    group: list[str],
) -> pl.DataFrame:
    """For every ``group`` of rows (columns pid, d, si, tid): a source by weight among those
    present in the group, then one of its answers uniformly. One row per group.

    The general form of :meth:`_Pool.draw` (same random keys, so the same result), used
    where the dense form does not apply: drawing among a filtered set of answers."""
    pick = uniform(seed, s_answer, pool["pid"], pool["d"], pool["tid"])
    pool = pool.with_columns(_u=pl.Series(pick))
    if len(weights) > 1:
        race = -np.log1p(-uniform(seed, s_source, pool["pid"], pool["d"], pool["si"]))
        pool = pool.with_columns(_k=pl.Series(race) / pl.col("si").replace_strict(weights, return_dtype=pl.Float64))
        pool = pool.filter(pl.col("_k") == pl.col("_k").min().over(group)).drop("_k")
    return pool.filter(pl.col("_u") == pl.col("_u").min().over(group)).drop("_u")


class _Pool:
    """One pool's answers laid out by (prompt code, source): a dense (prompts × sources)
    array of each cell's row, so a source race needs no join and no grouping.

    For a slot (prompt, draw index d), the source is an exponential race: each source
    present for the prompt gets Exp(1)/w from a uniform keyed on (prompt id, d, source);
    the smallest wins, with probability w/Σw over the sources present (weights
    renormalised per prompt). The answer is the winner's answer with the smallest uniform
    keyed on (prompt id, d, answer id). Keys are 53-bit uniforms of distinct tuples: no ties.
    """

    def __init__(self, cand: Candidates, weights: dict[int, float]) -> None:
        self.weights = weights
        self.sources = np.array(sorted(weights), dtype=np.int64)
        self.w = np.array([weights[s] for s in self.sources], dtype=np.float64)
        k = len(self.sources)
        self.k = max(k, 1)
        # gathered for every row: the smallest type that holds a pool index
        local = np.full(len(cand.sources) + 1, -1, dtype=np.int16 if k < 2**15 else np.int64)
        local[self.sources] = np.arange(k)
        in_pool = local[cand.rows["si"].to_numpy()]
        index = np.flatnonzero(in_pool >= 0)  # the pool's rows of cand.rows
        cell = cand.rows["pc"].to_numpy()[index].astype(np.int64)
        cell *= self.k
        cell += in_pool[index]
        # per cell, the last and the first of its rows: they differ iff it has several
        self.row_of_cell = np.full(cand.n_codes * self.k, -1, dtype=np.int32)
        self.row_of_cell[cell] = index
        if (self.row_of_cell[cell] == index).all():  # the usual case: one answer per cell
            self.several = np.zeros(cand.n_codes * self.k, dtype=bool)
        else:
            first = np.full(cand.n_codes * self.k, -1, dtype=np.int32)
            first[cell[::-1]] = index[::-1]
            self.several = self.row_of_cell != first
        self.present = (self.row_of_cell >= 0).reshape(cand.n_codes, self.k)
        multi = self.several[cell]
        self.multi = pl.DataFrame({"tid": cand.rows["tid"].to_numpy()[index[multi]], "cell": cell[multi], "row": index[multi]})

    def has(self) -> np.ndarray:
        """Per prompt code: does the pool have an answer?"""
        return self.present.any(axis=1)

    def draw(self, pc: np.ndarray, d: np.ndarray, pid: np.ndarray, seed: int, s_source: int, s_answer: int) -> np.ndarray:
        """One answer (a row of ``cand.rows``) per slot; every slot's prompt must be present."""
        if len(self.sources) > 1:  # with one source in the pool, it always wins the race
            h = _chain(seed, s_source, pid, d)
            race = np.empty((len(pc), self.k), dtype=np.float64)
            with np.errstate(over="ignore"):
                for j, source in enumerate(self.sources):
                    race[:, j] = -np.log1p(-_unit(_splitmix(h ^ np.uint64(source)))) / self.w[j]
            race[~self.present[pc]] = np.inf
            cell = pc.astype(np.int64) * self.k + race.argmin(axis=1)
        else:
            cell = pc.astype(np.int64) * self.k
        row = self.row_of_cell[cell].astype(np.int64)
        several = np.flatnonzero(self.several[cell])
        if several.size:  # the winner has several answers: the smallest answer key among them
            slots = pl.DataFrame({"_slot": several, "cell": cell[several], "pid": pid[several], "d": d[several]})
            rows = self.multi.join(slots, on="cell")
            u = uniform(seed, s_answer, rows["pid"], rows["d"], rows["tid"])
            best = rows.with_columns(_u=pl.Series(u)).filter(pl.col("_u") == pl.col("_u").min().over("_slot"))
            row[best["_slot"].to_numpy()] = best["row"].to_numpy()
        return row


@dataclass
class _Kind:
    """One kind of pair: its slots (prompt × draw index, the units a pair is drawn for)
    and the function that draws the pairs of a batch of slots."""

    name: str
    slots: pl.DataFrame  # pc, pid, d
    draw: Callable[[pl.DataFrame], pl.DataFrame]  # slots (pc, pid, d, _p) → pairs: pc, d, _p, c_*, r_* (_SIDE)
    stream: int


def _slots(cand: Candidates, codes: np.ndarray, per_prompt: np.ndarray | int) -> pl.DataFrame:
    """Slots (pc, pid, d) for prompt ``codes``, d = 0 … per_prompt-1."""
    reps = np.broadcast_to(np.asarray(per_prompt, dtype=np.int64), codes.shape)
    pc = np.repeat(codes, reps)
    starts = np.repeat(np.cumsum(reps) - reps, reps)
    d = np.arange(len(pc), dtype=np.int64) - starts
    return pl.DataFrame({"pc": pc.astype(np.uint32), "pid": cand.pid[pc], "d": d.astype(np.uint64)})


_SIDE = ("cid", "si", "tid", "score")


def _side(rows: pl.DataFrame, at: np.ndarray, prefix: str) -> dict[str, pl.Series]:
    picked = rows.select(_SIDE)[pl.Series(at, dtype=pl.Int64)]
    return {f"{prefix}_{c}": picked[c] for c in _SIDE}


def matrix_kind(
    cand: Candidates, pools: ResolvedPools, config: RoundConfig, sources: list[str]
) -> tuple[_Kind, dict[str, int]]:
    pos = _Pool(cand, {sources.index(s): w for s, w in pools.positive.items()})
    neg = _Pool(cand, {sources.index(s): w for s, w in pools.negative.items()})
    has_pos, has_neg = pos.has(), neg.has()
    skipped = {
        "matrix: no positive answer": int((has_neg & ~has_pos).sum()),
        "matrix: no negative answer": int((has_pos & ~has_neg).sum()),
    }
    slots = _slots(cand, np.flatnonzero(has_pos & has_neg), config.max_pairs_per_prompt)
    seed = config.seed

    def draw(batch: pl.DataFrame) -> pl.DataFrame:
        pc, d, pid = batch["pc"].to_numpy(), batch["d"].to_numpy(), batch["pid"].to_numpy()
        c = pos.draw(pc, d, pid, seed, _S_POS_SOURCE, _S_POS_ANSWER)
        r = neg.draw(pc, d, pid, seed, _S_NEG_SOURCE, _S_NEG_ANSWER)
        pairs = batch.select("pc", "d", "_p").with_columns(**_side(cand.rows, c, "c"), **_side(cand.rows, r, "r"))
        same = cand.same_text(pairs["c_cid"].to_numpy(), pairs["r_cid"].to_numpy())
        if same.any():  # the rejected must differ from the chosen: redraw among those that do
            pairs = pl.concat([pairs.filter(pl.Series(~same)), _redraw_rejected(pairs.filter(pl.Series(same)))])
        return pairs

    def _redraw_rejected(bad: pl.DataFrame) -> pl.DataFrame:
        # Drawing among the negatives whose text differs from the chosen gives what drawing
        # among all did wherever the winner's text differed (a race's winner stays the
        # winner when losers leave), so only these slots need the filtered draw.
        negatives = cand.rows.filter(pl.col("si").is_in(list(neg.weights)))
        rows = negatives.join(bad.select("pc", "d", "_p", *[f"c_{c}" for c in _SIDE]), on="pc")
        rows = rows.filter(pl.Series(~cand.same_text(rows["cid"].to_numpy(), rows["c_cid"].to_numpy())))
        rows = rows.with_columns(pid=pl.Series(cand.pid[rows["pc"].to_numpy()]))
        won = _draw_source_then_answer(rows, neg.weights, seed, _S_NEG_SOURCE, _S_NEG_ANSWER, ["pc", "d"])
        return won.select("pc", "d", "_p", *[f"c_{c}" for c in _SIDE], **{f"r_{c}": c for c in _SIDE})

    return _Kind("matrix", slots, draw, _S_ORDER_MATRIX), skipped


def base_kind(
    cand: Candidates, pools: ResolvedPools, config: RoundConfig, sources: list[str]
) -> tuple[_Kind, float | None, dict[str, int]]:
    n = cand.n_codes
    base_all = cand.rows.filter(pl.col("si") == sources.index(pools.base_model))
    base = base_all.filter(pl.col("score").is_not_null())
    skipped = {
        "base: no scored base answer": int(
            ((np.bincount(base_all["pc"].to_numpy(), minlength=n) > 0) & (np.bincount(base["pc"].to_numpy(), minlength=n) == 0)).sum()
        ),
    }
    # one τ for all prompts (global mean, fixed) needs no per-prompt frame: key them all alike
    key = pl.col("pc") if config.tau_mode == "prompt-mean" else pl.lit(0, dtype=pl.UInt32)
    taus, tau = tau_per_prompt(base.select(key.alias("prompt_id"), "score"), config.tau_mode, config.tau_value)  # type: ignore[arg-type]
    if tau is not None:  # one τ for all prompts (global mean or fixed)
        base = base.with_columns(tau=pl.lit(tau))
    else:
        base = base.join(taus.rename({"prompt_id": "pc"}), on="pc", how="inner", maintain_order="left")
    base = base.with_columns(above=pl.col("score") > pl.col("tau"), pid=pl.Series(cand.pid[base["pc"].to_numpy()]))
    pc_b, above = base["pc"].to_numpy(), base["above"].to_numpy()
    a = np.bincount(pc_b[above], minlength=n)
    b = np.bincount(pc_b[~above], minlength=n)
    scored = (a + b) > 0
    skipped["base: no answer above τ"] = int((scored & (a == 0)).sum())
    skipped["base: no answer at or below τ"] = int(((a > 0) & (b == 0)).sum())
    cap = config.max_pairs_per_prompt
    eligible = np.flatnonzero((a > 0) & (b > 0))
    if config.pairing == "best-worst":
        # slot d pairs the d-th best above τ with the d-th worst at or below τ
        slots = _slots(cand, eligible, np.minimum(np.minimum(a, b), cap)[eligible])
    else:
        slots = _slots(cand, eligible, cap)
    cols = _SIDE
    best = worst = None
    if config.pairing == "best-worst" and cap == 1:
        # the best above τ and the worst at or below τ of every prompt, ties at random
        tid = base["tid"].to_numpy()
        score = base["score"].to_numpy()

        def tie_key(rows: np.ndarray) -> np.ndarray:
            return uniform(config.seed, _S_BASE_TIE, tid[rows])

        best = _extreme(pc_b, score, tie_key, above, n, largest=True)
        worst = _extreme(pc_b, score, tie_key, ~above, n, largest=False)

    def draw(batch: pl.DataFrame) -> pl.DataFrame:
        if best is not None and worst is not None:
            pc = batch["pc"].to_numpy()
            pairs = batch.select("pc", "d", "_p").with_columns(**_side(base, best[pc], "c"), **_side(base, worst[pc], "r"))
        else:
            rows = base.join(batch.select("pc").unique(), on="pc", how="semi")
            if config.pairing == "best-worst":
                rows = rows.with_columns(_u=pl.Series(uniform(config.seed, _S_BASE_TIE, rows["tid"])))
                ups = (
                    rows.filter(pl.col("above")).sort("pc", "score", "_u", descending=[False, True, False])
                    .with_columns(d=pl.int_range(pl.len(), dtype=pl.UInt64).over("pc"))
                )
                downs = (
                    rows.filter(~pl.col("above")).sort("pc", "score", "_u")
                    .with_columns(d=pl.int_range(pl.len(), dtype=pl.UInt64).over("pc"))
                )
                ups, downs = ups.join(batch, on=["pc", "d"], how="semi"), downs.join(batch, on=["pc", "d"], how="semi")
            else:
                ups = _uniform_pick(rows.filter(pl.col("above")).join(batch.select("pc", "d"), on="pc"), config.seed, _S_BASE_POS)
                downs = _uniform_pick(rows.filter(~pl.col("above")).join(batch.select("pc", "d"), on="pc"), config.seed, _S_BASE_NEG)
            pairs = ups.select("pc", "d", **{f"c_{c}": c for c in cols}).join(
                downs.select("pc", "d", **{f"r_{c}": c for c in cols}), on=["pc", "d"], how="inner"
            ).join(batch.select("pc", "d", "_p"), on=["pc", "d"])
        # a pair of equal texts is no pair (best and worst may read the same)
        return pairs.filter(pl.Series(~cand.same_text(pairs["c_cid"].to_numpy(), pairs["r_cid"].to_numpy())))

    return _Kind("base", slots, draw, _S_ORDER_BASE), tau, skipped


def _extreme(
    pc: np.ndarray, score: np.ndarray, tie_key: Callable[[np.ndarray], np.ndarray], mask: np.ndarray, n: int, largest: bool
) -> np.ndarray:
    """Per prompt code: the row (among ``mask``) with the largest (or smallest) score, ties
    broken by the smallest ``tie_key(rows)`` (asked only for the rows at a prompt's top);
    -1 where the prompt has no such row."""
    idx = np.flatnonzero(mask)
    p, s = pc[idx], (score[idx] if largest else -score[idx])
    top = np.full(n, -np.inf)
    np.maximum.at(top, p, s)
    at_top = s == top[p]
    idx, p = idx[at_top], p[at_top]
    u = tie_key(idx)
    lowest = np.full(n, np.inf)
    np.minimum.at(lowest, p, u)
    first = u == lowest[p]
    out = np.full(n, -1, dtype=np.int64)
    out[p[first]] = idx[first]
    return out


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
    d = slots["d"].to_numpy()
    # (priorities are 53-bit hashes: a tie is a once-in-10^4-builds event, and only a tie at
    # the end of a batch could matter, which is 2 % past the last pair selected)
    order = np.argsort(prio) if d.max() == 0 else np.lexsort((prio, d))
    slots = slots.with_columns(_p=pl.Series(prio))[pl.Series(order)]
    if need is None:
        drawn = _dedupe(kind.draw(slots))
        return drawn, drawn.height
    drawn = pl.DataFrame()
    start = 0
    while start < slots.height and drawn.height < need:
        size = int((need - drawn.height) * 1.02) + 256
        batch = slots.slice(start, size)
        start += size
        new = kind.draw(batch)
        drawn = _dedupe(pl.concat([drawn, new], how="vertical_relaxed") if drawn.height else new)
    return drawn, drawn.height + max(0, slots.height - start)


def _uniform_pick(frame: pl.DataFrame, seed: int, stream: int) -> pl.DataFrame:
    u = uniform(seed, stream, frame["pid"], frame["d"], frame["tid"])
    return frame.with_columns(_v=pl.Series(u)).filter(pl.col("_v") == pl.col("_v").min().over("pc", "d")).drop("_v")


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

    A slot (pc, d) holds one pair, so the smallest d identifies the first draw; rows come
    back in no particular order (callers sort by selection order)."""
    if pairs.height == 0 or pairs["d"].max() == 0:  # one draw per prompt: nothing drawn twice
        return pairs
    return pairs.filter(pl.col("d") == pl.col("d").min().over("pc", "c_tid", "r_tid"))


def _select(pairs: pl.DataFrame, n: int, pid: np.ndarray) -> pl.DataFrame:
    """The first ``n`` pairs in selection order: by draw index, then the slot's priority
    ``_p``, then (for the tie of two 53-bit priorities) the prompt's key, so the order is
    a function of the content and seed alone."""
    if pairs.height == 0 or n == 0:
        return pairs.head(0)
    with_key = pairs.with_columns(_pid=pl.Series(pid[pairs["pc"].to_numpy()]))
    return with_key.sort("d", "_p", "_pid").head(n).drop("_pid")


def build_pairs(inputs: BuildInputs, config: RoundConfig, pools: ResolvedPools) -> BuildResult:
    """The pairs of one round (no texts yet: see :func:`to_conversations`)."""
    want_base = config.mix_base > 0
    # base answers are always read: they give the score distances of the summary
    sources = sorted(set(pools.positive) | set(pools.negative) | {pools.base_model})
    cand, skipped = candidates(inputs, config, sources, pools.base_model)
    warnings = list(pools.warnings)
    need = _targets(config, {"matrix": 0, "base": 0}) if config.pairs is not None else None

    def draw_matrix() -> tuple[pl.DataFrame, int, dict[str, int]]:
        kind, sk = matrix_kind(cand, pools, config, sources)
        return (*_draw_in_order(kind, need["matrix"] if need else None, config.seed), sk)

    def draw_base() -> tuple[pl.DataFrame, int, dict[str, int], float | None]:
        kind, tau, sk = base_kind(cand, pools, config, sources)
        return (*_draw_in_order(kind, need["base"] if need else None, config.seed), sk, tau)

    # the two kinds share nothing but the candidates: draw them on two threads (Polars and
    # NumPy release the GIL), each deterministic on its own
    drawn: dict[str, pl.DataFrame] = {}
    available = {"matrix": 0, "base": 0}
    tau: float | None = None
    with ThreadPoolExecutor(max_workers=3) as threads:
        matrix = threads.submit(draw_matrix) if config.mix_matrix > 0 else None
        base = threads.submit(draw_base) if want_base else None
        # the answer ids' contiguous copy, which the pair ids need first, beside the draws
        threads.submit(lambda: cand.target_ids)
        if matrix is not None:
            drawn["matrix"], available["matrix"], sk = matrix.result()
            skipped.update(sk)
        if base is not None:
            drawn["base"], available["base"], sk, tau = base.result()
            skipped.update(sk)
    requested = need if need is not None else _targets(config, available)
    chosen_frames = [_select(drawn[k], requested[k], cand.pid).with_columns(kind=pl.lit(k)) for k in drawn if drawn[k].height]
    for kind, n in requested.items():
        if available[kind] < n:
            warnings.append(
                f"fewer {kind} pairs than asked: {n} asked, only {available[kind]} possible "
                f"(built what is possible; see the skipped prompts in --dry-run)"
            )
    cols = ["kind", "pc", *[f"{side}_{c}" for c in _SIDE for side in "cr"]]
    pairs = (
        pl.concat([f.select(cols) for f in chosen_frames], how="vertical_relaxed")
        if chosen_frames
        else pl.DataFrame()
    )
    # the source stats beside _finish, where a core is often idle (not beside the draws,
    # which keep both cores busy)
    with ThreadPoolExecutor(max_workers=1) as thread:
        stats_of = thread.submit(_source_stats, cand)
        finished = _finish(pairs, cand)
        stats = stats_of.result()
    present = set(stats["source"])
    for source in sources:
        if source not in present and (want_base or source != pools.base_model):
            warnings.append(f"source {source!r} has no answers for the {config.split!r} prompts")
    return BuildResult(
        pairs=finished, tau=tau, requested=requested, available=available, skipped=skipped,
        warnings=warnings, candidates=stats,
    )


def _source_stats(cand: Candidates) -> pl.DataFrame:
    """Per source present: answers, scored answers and mean score (null if none scored)."""
    names = pl.Series(cand.sources, dtype=pl.String)
    stats = cand.rows.group_by("si").agg(
        answers=pl.len().cast(pl.UInt32), mean_score=pl.col("score").mean(), scored=pl.col("score").count().cast(pl.UInt32)
    )
    return stats.select("answers", "mean_score", "scored", source=names.gather(stats["si"])).sort("source")


def _finish(pairs: pl.DataFrame, cand: Candidates) -> pl.DataFrame:
    """Strings at last: prompt ids, answer ids, sources and turns of chosen and rejected."""
    if pairs.height == 0:
        return pl.DataFrame(
            schema={"pair_id": pl.String, "prompt_id": pl.String, "kind": pl.String, "chosen_id": pl.String, "rejected_id": pl.String,
                    "chosen_source": pl.String, "rejected_source": pl.String, "chosen_score": pl.Float64,
                    "rejected_score": pl.Float64, "chosen_turns": pl.List(pl.String), "rejected_turns": pl.List(pl.String)}
        )
    names = pl.Series(cand.sources, dtype=pl.String)
    c_cid, r_cid = pairs["c_cid"], pairs["r_cid"]
    keys = pl.DataFrame({
        "kind": pairs["kind"],
        "prompt_id": cand.prompt_ids.gather(pairs["pc"]),  # a prompt's code is its row
        "chosen_id": cand.target_ids.gather(c_cid),
        "rejected_id": cand.target_ids.gather(r_cid),
    })
    # rows stay in selection order (matrix, then base pairs, each in its seeded order): a
    # pure function of content and seed, so no sort by pair_id is needed for determinism.
    # The texts are gathered beside the hashing (DuckDB hashes on both cores, but the
    # gathers are memory-bound).
    with ThreadPoolExecutor(max_workers=1) as thread:
        texts = thread.submit(lambda: (cand.turns.gather(c_cid), cand.turns.gather(r_cid)))
        pair_id = pair_ids(keys)
        chosen_turns, rejected_turns = texts.result()
    # chosen and rejected texts differ: checked when drawing
    return pl.DataFrame({
        "pair_id": pair_id,
        "prompt_id": keys["prompt_id"],
        "kind": pairs["kind"],
        "chosen_id": keys["chosen_id"],
        "rejected_id": keys["rejected_id"],
        "chosen_source": names.gather(pairs["c_si"]),
        "rejected_source": names.gather(pairs["r_si"]),
        "chosen_score": pairs["c_score"].cast(pl.Float64),
        "rejected_score": pairs["r_score"].cast(pl.Float64),
        "chosen_turns": chosen_turns,
        "rejected_turns": rejected_turns,
    })


def pair_ids(keys: pl.DataFrame) -> pl.Series:
    """pair_id = content hash of (kind, prompt id, chosen answer id, rejected answer id),
    computed inside DuckDB (both cores) with the same function as :mod:`tso_data.ids`.

    >>> from tso_data.ids import content_hash
    >>> keys = pl.DataFrame({"kind": ["base"], "prompt_id": ["p"], "chosen_id": ["c"], "rejected_id": ["r"]})
    >>> pair_ids(keys).item() == content_hash("pair", "base", "p", "c", "r")
    True
    """
    expr = sql_hash("pair", "kind", "prompt_id", "chosen_id", "rejected_id")
    table = keys.select("kind", "prompt_id", "chosen_id", "rejected_id").to_arrow(compat_level=pl.CompatLevel.newest())
    # batches DuckDB can hash on both cores (a one-batch table is scanned by one thread)
    frame = pa.Table.from_batches(table.to_batches(max_chunksize=1 << 16), schema=table.schema)  # noqa: F841
    with duckdb.connect() as con:  # a private in-memory connection: safe on any thread
        return con.sql(f"SELECT {expr} AS pair_id FROM frame").pl().get_column("pair_id")
