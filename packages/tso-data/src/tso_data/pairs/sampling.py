"""Counter-based randomness and the one weighted sampler of pair building.

Every random number is a SplitMix64 hash of (seed, stream, integer keys taken from the
content-hash ids), so a draw depends only on what is drawn and never on row order, codes,
thread scheduling or how the inputs were partitioned: same inputs + config + seed → the same
pairs. :mod:`tso_data.pairs.reference` computes the same numbers with plain Python integers.

The weighted draw (docs/design.md, "1. The method", Pools): for a slot (prompt, draw index),
each source of the pool that has an answer for the prompt runs an exponential race,
Exp(1)/weight from a uniform keyed on (prompt key, draw index, source index); the smallest
wins, which is a draw with probability weight / Σ weights over the sources present (weights
renormalised per prompt). The answer is then the winner's answer with the smallest uniform
keyed on (prompt key, draw index, answer key). Keys are 53-bit uniforms of distinct tuples:
ties do not happen in practice.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import polars as pl


class Stream(IntEnum):
    """One random stream per kind of draw, so changing one part never shifts another."""

    POSITIVE_SOURCE = 1
    POSITIVE_ANSWER = 2
    NEGATIVE_SOURCE = 3
    NEGATIVE_ANSWER = 4
    BASE_TIE = 5
    BASE_POSITIVE = 6
    BASE_NEGATIVE = 7
    ORDER_MATRIX = 8
    ORDER_BASE = 9


# -- counter-based uniforms -----------------------------------------------------------------

_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

Key = pl.Series | np.ndarray | int


def splitmix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of ``values + golden``, as a new array (updated in place on one
    copy: the arrays are millions long, and every temporary is fresh memory)."""
    mixed = values + _GOLDEN
    shifted = np.right_shift(mixed, np.uint64(30))
    with np.errstate(over="ignore"):
        mixed ^= shifted
        mixed *= _MIX_1
        np.right_shift(mixed, np.uint64(27), out=shifted)
        mixed ^= shifted
        mixed *= _MIX_2
    np.right_shift(mixed, np.uint64(31), out=shifted)
    mixed ^= shifted
    return mixed


def hash_keys(seed: int, stream: int, *keys: Key) -> np.ndarray:
    """The 64-bit hash behind :func:`uniform`. Extending the keys by one more key ``k`` is
    ``splitmix(hash ^ k)``, so a prefix shared by many draws is hashed once."""
    with np.errstate(over="ignore"):
        # modulo 2^64, as the rest of the hash: any seed up to 2^63 - 1
        hashed = splitmix(np.array([(seed * 1_000_003 + stream) & 0xFFFF_FFFF_FFFF_FFFF], dtype=np.uint64))
        for key in keys:
            array = key.to_numpy() if isinstance(key, pl.Series) else key
            hashed = splitmix(hashed ^ np.asarray(array).astype(np.uint64, copy=False))
    return hashed


def to_unit(hashed: np.ndarray) -> np.ndarray:
    """The top 53 bits of each hash as a float in [0, 1)."""
    unit = np.right_shift(hashed, np.uint64(11)).astype(np.float64)
    unit *= 1.0 / (1 << 53)
    return unit


def uniform(seed: int, stream: int, *keys: Key) -> np.ndarray:
    """Uniform [0, 1) numbers, one per row, a pure function of (seed, stream, keys).

    >>> a = uniform(43, 1, np.array([1, 2, 3], dtype=np.uint64))
    >>> b = uniform(43, 1, np.array([3, 2, 1], dtype=np.uint64))
    >>> bool(a[0] == b[2]) and bool(((a >= 0) & (a < 1)).all())
    True
    """
    return to_unit(hash_keys(seed, stream, *keys))


def smallest_key_per_group(rows: pl.DataFrame, seed: int, stream: int, group: list[str]) -> pl.DataFrame:
    """The row of each ``group`` with the smallest uniform keyed on (prompt_key, draw_index,
    answer_key): a uniform draw of one answer per group, the same whatever the row order."""
    draw = uniform(seed, stream, rows["prompt_key"], rows["draw_index"], rows["answer_key"])
    with_draw = rows.with_columns(answer_draw=pl.Series(draw))
    return with_draw.filter(pl.col("answer_draw") == pl.col("answer_draw").min().over(group)).drop("answer_draw")


# -- the weighted sampler ---------------------------------------------------------------------


class WeightedPool:
    """One pool's answers laid out by (prompt code, source): a dense (prompts × sources) array
    of each cell's row, so a source race needs no join and no grouping.

    ``answers`` has one row per answer: prompt_code, source_index, answer_key; a draw returns
    rows of it. ``weights`` maps source index → weight. Two ways to draw, one race and one
    answer pick: :meth:`draw` (every answer of the pool may be drawn) and :meth:`draw_among`
    (only the answers listed per slot)."""

    def __init__(self, answers: pl.DataFrame, n_codes: int, weights: dict[int, float], n_sources: int) -> None:
        self.weights = weights
        self.sources = np.array(sorted(weights), dtype=np.int64)
        self.source_weights = np.array([weights[s] for s in self.sources], dtype=np.float64)
        self.width = max(len(self.sources), 1)  # cells per prompt
        # gathered for every answer: the smallest type that holds a position in the pool
        self.position = np.full(n_sources + 1, -1, dtype=np.int16 if len(self.sources) < 2**15 else np.int64)
        self.position[self.sources] = np.arange(len(self.sources))
        position = self.position[answers["source_index"].to_numpy()]
        rows = np.flatnonzero(position >= 0)  # the pool's rows of ``answers``
        cell = answers["prompt_code"].to_numpy()[rows].astype(np.int64)
        cell *= self.width
        cell += position[rows]
        # per cell, the last and the first of its rows: they differ iff it has several
        self.row_of_cell = np.full(n_codes * self.width, -1, dtype=np.int32)
        self.row_of_cell[cell] = rows
        if (self.row_of_cell[cell] == rows).all():  # the usual case: one answer per cell
            self.has_several = np.zeros(n_codes * self.width, dtype=bool)
        else:
            first = np.full(n_codes * self.width, -1, dtype=np.int32)
            first[cell[::-1]] = rows[::-1]
            self.has_several = self.row_of_cell != first
        self.present = (self.row_of_cell >= 0).reshape(n_codes, self.width)
        several = self.has_several[cell]
        self.rows_of_shared_cells = pl.DataFrame({
            "answer_key": answers["answer_key"].to_numpy()[rows[several]], "cell": cell[several], "row": rows[several],
        })

    def has_answer(self) -> np.ndarray:
        """Per prompt code: does the pool have an answer for it?"""
        return self.present.any(axis=1)

    def draw(
        self, prompt_code: np.ndarray, draw_index: np.ndarray, prompt_key: np.ndarray, seed: int,
        streams: tuple[Stream, Stream],
    ) -> np.ndarray:
        """One answer (a row of ``answers``) per slot; the pool must have an answer for every
        slot's prompt. ``streams``: (source race, answer pick)."""
        winner = self._race(self.present[prompt_code], prompt_key, draw_index, seed, streams[0])
        cell = prompt_code.astype(np.int64) * self.width + winner
        row = self.row_of_cell[cell].astype(np.int64)
        slots = np.flatnonzero(self.has_several[cell])
        if slots.size:  # the winner has several answers: pick among them
            shared = pl.DataFrame({"slot": slots, "cell": cell[slots], "prompt_key": prompt_key[slots],
                                   "draw_index": draw_index[slots]})
            picked = self._pick(self.rows_of_shared_cells.join(shared, on="cell"), seed, streams[1])
            row[picked["slot"].to_numpy()] = picked["row"].to_numpy()
        return row

    def draw_among(
        self, allowed: pl.DataFrame, prompt_code: np.ndarray, draw_index: np.ndarray, prompt_key: np.ndarray,
        seed: int, streams: tuple[Stream, Stream],
    ) -> pl.DataFrame:
        """One answer per slot among the answers ``allowed`` for it (columns slot, row,
        source_index, answer_key: slot indexes the slot arrays, row is a row of ``answers``).
        Returns slot, row; a slot with no allowed answer draws nothing.

        A race's winner stays the winner when losers leave, so wherever :meth:`draw`'s answer
        is allowed, this gives the same answer."""
        slot = allowed["slot"].to_numpy()
        position = self.position[allowed["source_index"].to_numpy()].astype(np.int64)
        present = np.zeros((len(prompt_code), self.width), dtype=bool)
        present[slot, position] = True
        winner = self._race(present, prompt_key, draw_index, seed, streams[0])
        in_winner = allowed.filter(pl.Series(position == winner[slot]))
        slot = in_winner["slot"].to_numpy()
        in_winner = in_winner.with_columns(
            prompt_key=pl.Series(prompt_key[slot]), draw_index=pl.Series(draw_index[slot])
        )
        return self._pick(in_winner, seed, streams[1]).select("slot", "row")

    def _race(
        self, present: np.ndarray, prompt_key: np.ndarray, draw_index: np.ndarray, seed: int, stream: Stream
    ) -> np.ndarray:
        """Per slot, the position in the pool of the source that wins the race among those
        ``present`` (slots × sources)."""
        if len(self.sources) <= 1:  # with one source in the pool, it always wins
            return np.zeros(len(present), dtype=np.int64)
        prefix = hash_keys(seed, stream, prompt_key, draw_index)
        race = np.empty(present.shape, dtype=np.float64)
        with np.errstate(over="ignore"):
            for position, source in enumerate(self.sources):
                race[:, position] = -np.log1p(-to_unit(splitmix(prefix ^ np.uint64(source))))
                race[:, position] /= self.source_weights[position]
        race[~present] = np.inf
        return race.argmin(axis=1)

    @staticmethod
    def _pick(candidates: pl.DataFrame, seed: int, stream: Stream) -> pl.DataFrame:
        """Per slot, the candidate answer with the smallest answer key."""
        return smallest_key_per_group(candidates, seed, stream, ["slot"])
