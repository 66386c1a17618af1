"""The schedule of a run: parts, steps per epoch, the order of each epoch, the learning rate.

Mini-batch iterative DPO (docs/design.md, 1. The method) shuffles the pairs with the seed and
splits them into T equal parts; each part runs ``epochs`` passes, reshuffled per epoch, one
optimiser step per global batch. Each epoch runs ⌊part / global batch⌋ full steps; the
< global-batch leftover items of an epoch sit it out (a different set each epoch). A global
batch larger than a part is clamped to the part (rounded down to a multiple of micro-batch ×
ranks) with a warning. The learning rate warms up linearly and decays along a cosine to 0,
restarting with every part. `sft` runs the same schedule as a single part.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from tso_train.errors import TSOTrainError


@dataclass(frozen=True)
class PartPlan:
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def split_parts(n_pairs: int, parts: int, seed: int) -> list[np.ndarray]:
    """Shuffle 0..n-1 with the seed and split into ``parts`` equal parts (sizes differ by ≤ 1).

    >>> [p.tolist() for p in split_parts(5, 2, 43)] == [p.tolist() for p in split_parts(5, 2, 43)]
    True
    >>> sorted(len(p) for p in split_parts(10, 3, 0))
    [3, 3, 4]
    """
    if parts < 1:
        raise TSOTrainError("--parts must be at least 1")
    if parts > n_pairs:
        raise TSOTrainError(f"--parts {parts} is more than the {n_pairs} usable pair(s)")
    order = np.random.default_rng(seed).permutation(n_pairs)
    return np.array_split(order, parts)


def plan_part(n_items: int, global_batch: int, micro_batch: int, ranks: int, epochs: int, warmup_ratio: float,
              items: str, warn: bool = True) -> PartPlan:
    """The steps of one part of ``n_items``; ``items`` names them for the messages ("part 2's 86
    pairs"). A global batch larger than the part is clamped, with a warning when ``warn``.

    >>> plan_part(100, 32, 4, 1, 2, 0.1, "100 pairs")
    PartPlan(global_batch=32, steps_per_epoch=3, total_steps=6, warmup_steps=1)
    """
    unit = micro_batch * ranks
    if global_batch > n_items:
        clamped = (n_items // unit) * unit
        if clamped == 0:
            raise TSOTrainError(f"{items} are fewer than --micro-batch × ranks = {unit}")
        if warn:
            warnings.warn(f"--global-batch {global_batch} exceeds {items}; using {clamped}", stacklevel=2)
        global_batch = clamped
    steps_per_epoch = n_items // global_batch
    total = steps_per_epoch * epochs
    return PartPlan(global_batch, steps_per_epoch, total, int(math.ceil(warmup_ratio * total)))


def plan_parts(part_sizes: list[int], global_batch: int, micro_batch: int, ranks: int, epochs: int,
               warmup_ratio: float, warn: bool = True) -> list[PartPlan]:
    """One plan per part, all at the same global batch: a clamped batch (tiny parts) is the
    smallest part's, since parts differ by at most one pair.

    >>> [p.global_batch for p in plan_parts([9, 8, 8], 256, 4, 1, 1, 0.0, warn=False)]
    [8, 8, 8]
    """
    plans = [plan_part(n, global_batch, micro_batch, ranks, epochs, warmup_ratio, f"part {k + 1}'s {n} pairs", warn)
             for k, n in enumerate(part_sizes)]
    smallest = min(p.global_batch for p in plans)
    return [plan_part(n, smallest, micro_batch, ranks, epochs, warmup_ratio, "", warn=False) for n in part_sizes]


def epoch_order(items: np.ndarray, seed_key: tuple[int, ...], epoch: int) -> np.ndarray:
    """The items in the order of one epoch: a pure function of the seed key (the seed, and the
    part for `fit`) and the epoch, so a resumed run sees the same batches.

    >>> epoch_order(np.arange(4), (43, 0), 1).tolist() == epoch_order(np.arange(4), (43, 0), 1).tolist()
    True
    """
    return items[np.random.default_rng([*seed_key, epoch]).permutation(len(items))]


def cosine_lr(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up then cosine to 0 over one part (``step`` counts from 0).

    >>> [round(cosine_lr(s, 4, 1, 1.0), 3) for s in range(4)]
    [0.5, 1.0, 0.75, 0.25]
    """
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))
