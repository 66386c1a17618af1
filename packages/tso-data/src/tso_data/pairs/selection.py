"""Slots, and which drawn pairs a round takes.

A *slot* is (prompt, draw index d): the unit one pair is drawn for, d = 0 … cap-1 per prompt.
Each kind gets ``round(N·mix)`` pairs taken in selection order: first draws of every prompt
before second draws, and within a draw index a seeded random order, so pairs spread over
prompts; the same (chosen, rejected) drawn twice for a prompt counts once. If a kind has
fewer draws than asked, all are kept and the shortfall is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tso_data.pairs.sampling import Stream, uniform

if TYPE_CHECKING:
    from tso_data.pairs.candidates import Candidates
    from tso_data.pairs.config import RoundConfig

# the columns each side of a pair carries, prefixed chosen_ / rejected_
SIDE = ("answer_row", "source_index", "answer_key", "score")
SLOT = ("prompt_code", "draw_index", "priority")


def side_columns(prefix: str) -> list[str]:
    return [f"{prefix}_{column}" for column in SIDE]


def take_side(answers: pl.DataFrame, rows: np.ndarray, prefix: str) -> dict[str, pl.Series]:
    """The SIDE columns of ``answers`` at ``rows``, named for one side of the pairs."""
    picked = answers.select(SIDE)[pl.Series(rows, dtype=pl.Int64)]
    return {f"{prefix}_{column}": picked[column] for column in SIDE}


@dataclass
class Kind:
    """One kind of pair: its slots and the function that draws the pairs of a batch of them."""

    name: str
    slots: pl.DataFrame  # prompt_code, prompt_key, draw_index
    # slots (+ priority) → pairs: SLOT columns + chosen_* and rejected_* SIDE columns
    draw: Callable[[pl.DataFrame], pl.DataFrame]
    order_stream: Stream


def make_slots(candidates: Candidates, prompt_codes: np.ndarray, per_prompt: np.ndarray | int) -> pl.DataFrame:
    """Slots (prompt_code, prompt_key, draw_index) for ``prompt_codes``, draw_index = 0 … per_prompt-1."""
    repeats = np.broadcast_to(np.asarray(per_prompt, dtype=np.int64), prompt_codes.shape)
    prompt_code = np.repeat(prompt_codes, repeats)
    starts = np.repeat(np.cumsum(repeats) - repeats, repeats)
    draw_index = np.arange(len(prompt_code), dtype=np.int64) - starts
    return pl.DataFrame({
        "prompt_code": prompt_code.astype(np.uint32),
        "prompt_key": candidates.prompt_keys[prompt_code],
        "draw_index": draw_index.astype(np.uint64),
    })


def draw_in_order(kind: Kind, need: int | None, seed: int) -> tuple[pl.DataFrame, int]:
    """Draw pairs for the slots in selection order until ``need`` pairs exist.

    A draw depends only on its slot, so this gives exactly the pairs that drawing every slot
    and taking the first ``need`` would, with much less work. Returns (pairs, possible), where
    possible counts the slots left undrawn as successes (an upper bound)."""
    slots = kind.slots
    if slots.height == 0:
        return pl.DataFrame(), 0
    priority = uniform(seed, kind.order_stream, slots["prompt_key"], slots["draw_index"])
    draw_index = slots["draw_index"].to_numpy()
    # (priorities are 53-bit hashes: a tie is rare, and only a tie at the end of a batch,
    # which reaches past the last pair selected, could matter)
    order = np.argsort(priority) if draw_index.max() == 0 else np.lexsort((priority, draw_index))
    slots = slots.with_columns(priority=pl.Series(priority))[pl.Series(order)]
    if need is None:
        drawn = dedupe(kind.draw(slots))
        return drawn, drawn.height
    drawn = pl.DataFrame()
    start = 0
    while start < slots.height and drawn.height < need:
        size = int((need - drawn.height) * 1.02) + 256
        batch = slots.slice(start, size)
        start += size
        new = kind.draw(batch)
        drawn = dedupe(pl.concat([drawn, new], how="vertical_relaxed") if drawn.height else new)
    return drawn, drawn.height + max(0, slots.height - start)


def targets(config: RoundConfig, available: dict[str, int]) -> dict[str, int]:
    """Pairs to take per kind: round(N·mix); N = None → the largest N the mix allows.

    >>> from types import SimpleNamespace as C
    >>> targets(C(pairs=10, mix_matrix=0.5, mix_base=0.5), {"matrix": 100, "base": 100})
    {'matrix': 5, 'base': 5}
    >>> targets(C(pairs=None, mix_matrix=0.5, mix_base=0.5), {"matrix": 100, "base": 30})
    {'matrix': 30, 'base': 30}
    """
    mix = {"matrix": config.mix_matrix, "base": config.mix_base}
    n = config.pairs
    if n is None:
        n = min(int(available[k] / m + 1e-9) for k, m in mix.items() if m > 0)
    assert n is not None
    n_matrix = int(round(n * mix["matrix"]))
    return {"matrix": n_matrix, "base": n - n_matrix}


def dedupe(pairs: pl.DataFrame) -> pl.DataFrame:
    """The same (chosen, rejected) drawn twice for a prompt counts once (its first draw).

    A slot holds one pair, so the smallest draw index identifies the first draw; rows come
    back in no particular order (callers sort by selection order)."""
    if pairs.height == 0 or pairs["draw_index"].max() == 0:  # one draw per prompt: nothing drawn twice
        return pairs
    first = pl.col("draw_index").min().over("prompt_code", "chosen_answer_key", "rejected_answer_key")
    return pairs.filter(pl.col("draw_index") == first)


def select_first(pairs: pl.DataFrame, n: int, prompt_keys: np.ndarray) -> pl.DataFrame:
    """The first ``n`` pairs in selection order: by draw index, then the slot's priority, then
    (for the tie of two 53-bit priorities) the prompt's key, so the order is a function of
    the content and seed alone."""
    if pairs.height == 0 or n == 0:
        return pairs.head(0)
    with_key = pairs.with_columns(prompt_key=pl.Series(prompt_keys[pairs["prompt_code"].to_numpy()]))
    return with_key.sort("draw_index", "priority", "prompt_key").head(n).drop("prompt_key")
