"""Agreement between a judge and reference (human) scores: pure functions.

All take two equal-length sequences of numbers; a statistic that is undefined (fewer than
two points, no variance) is ``None``, never a made-up number.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def _check(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(x) != len(y):
        raise ValueError(f"length mismatch: {len(x)} vs {len(y)}")
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation.

    >>> pearson([1, 2, 3], [2, 4, 6])
    1.0
    >>> pearson([1, 2, 3], [3, 2, 1])
    -1.0
    >>> pearson([1, 2, 3], [5, 5, 5]) is None
    True
    """
    a, b = _check(x, y)
    if len(a) < 2:
        return None
    da, db = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((da * da).sum() * (db * db).sum()))
    if denom == 0.0:
        return None
    return round(float((da * db).sum() / denom), 12)


def average_ranks(x: Sequence[float]) -> list[float]:
    """1-based ranks, ties get the average of their positions.

    >>> average_ranks([10, 20, 20, 5])
    [2.0, 3.5, 3.5, 1.0]
    """
    a = np.asarray(x, dtype=float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=float)
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and a[order[j + 1]] == a[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks.tolist()


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson on average ranks).

    >>> spearman([1, 2, 3, 4], [1, 4, 9, 16])
    1.0
    >>> spearman([1, 2, 3], [1, 1, 1]) is None
    True
    """
    _check(x, y)
    return pearson(average_ranks(x), average_ranks(y))


def mae(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Mean absolute error.

    >>> mae([1, 2, 3], [2, 2, 5])
    1.0
    >>> mae([], []) is None
    True
    """
    a, b = _check(x, y)
    if len(a) == 0:
        return None
    return float(np.abs(a - b).mean())


def pairwise_accuracy(
    judge: Sequence[float], reference: Sequence[float], groups: Sequence[Hashable] | None = None
) -> tuple[float | None, int]:
    """How often the judge orders two answers as the reference does: (accuracy, n pairs).

    Pairs are formed within a group (answers to the same prompt) when given, else over all
    items. Pairs the reference scores as a tie are skipped; a judge tie counts as half right.

    >>> pairwise_accuracy([3, 2, 1], [9, 5, 1])
    (1.0, 3)
    >>> pairwise_accuracy([1, 2, 3], [9, 5, 1])
    (0.0, 3)
    >>> pairwise_accuracy([5, 5], [2, 1])
    (0.5, 1)
    >>> pairwise_accuracy([1, 2, 8, 9], [1, 2, 9, 8], groups=["a", "a", "b", "b"])
    (0.5, 2)
    >>> pairwise_accuracy([1], [1])
    (None, 0)
    """
    j, r = _check(judge, reference)
    keys = list(groups) if groups is not None else [0] * len(j)
    if len(keys) != len(j):
        raise ValueError("groups must be as long as the scores")
    by_group: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        by_group.setdefault(key, []).append(i)
    right = 0.0
    n = 0
    for members in by_group.values():
        idx = np.asarray(members)
        if len(idx) < 2:
            continue
        dj = np.sign(j[idx][:, None] - j[idx][None, :])
        dr = np.sign(r[idx][:, None] - r[idx][None, :])
        upper = np.triu(np.ones((len(idx), len(idx)), dtype=bool), k=1) & (dr != 0)
        n += int(upper.sum())
        right += float((dj[upper] == dr[upper]).sum()) + 0.5 * float((dj[upper] == 0).sum())
    if n == 0:
        return None, 0
    return right / n, n
