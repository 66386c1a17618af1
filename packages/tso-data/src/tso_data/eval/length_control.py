"""Length-controlled win rate (Dubois et al., 2024, "Length-Controlled AlpacaEval"): the
model behind AlpacaEval's ``length_controlled_v1``, written from its definition.

Per model, a logistic regression predicts the judge's preference for the model's answer
over the baseline's on each prompt from three features:

* ``tanh(Δ / sd(Δ))``, Δ = baseline length − model length in characters (AlpacaEval's
  ``output_1`` minus ``output_2``), sd over the model's prompts;
* the instruction's difficulty (given, or estimated by :mod:`tso_data.eval.difficulty`);
* 1 for the model's own rows (AlpacaEval's ``not_gamed_baseline``), 0 for the optional
  "gamed baseline" rows that regularise the length weight towards the baseline's.

The labels are the preferences themselves, p − 1 ∈ [0, 1] (soft labels: cross-entropy
against p − 1). The fit has no separate intercept and an L1 penalty on all three weights;
its strength C is chosen from 10 values log-spaced over [1e-4, 1e4] by 5-fold
cross-validation (folds never split a prompt) on the weighted log-loss, then the model is
refit on all rows with that C. Gamed rows weigh ``λ / 2`` each (λ = 0.2). The
length-controlled win rate is 100 · the mean predicted preference with Δ set to 0; its
standard error is 100 · the standard error of those predictions (AlpacaEval's
``lc_standard_error``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 4, 10))
FEATURES = ("length", "difficulty", "model")
MIN_PROMPTS = 5


@dataclass(frozen=True)
class GamedRows:
    """Rows of the baseline against length-gamed versions of itself (AlpacaEval's
    ``df_gamed``): labels in [0, 1], standardised length differences, difficulties."""

    label: np.ndarray
    std_delta_len: np.ndarray
    difficulty: np.ndarray


@dataclass(frozen=True)
class LengthControlled:
    win_rate: float
    standard_error: float
    weights: dict[str, float]
    C: float


def standardised_length_difference(len_model: np.ndarray, len_baseline: np.ndarray) -> np.ndarray:
    """(baseline − model) / its sample sd; zeros when the difference never varies.

    >>> standardised_length_difference(np.array([10.0, 20.0, 30.0]), np.array([20.0, 20.0, 20.0]))
    array([ 1.,  0., -1.])
    """
    delta = np.asarray(len_baseline, dtype=float) - np.asarray(len_model, dtype=float)
    sd = float(np.std(delta, ddof=1)) if delta.size > 1 else 0.0
    return delta / sd if sd > 0 else np.zeros_like(delta)


def _loss(w: np.ndarray, X: np.ndarray, y: np.ndarray, s: np.ndarray, C: float) -> float:
    z = X @ w
    cross_entropy = y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)
    return C * float(s @ cross_entropy) + float(np.abs(w).sum())


def _newton_direction(w: np.ndarray, g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """argmin_d g·d + ½ dᵀhd + ‖w + d‖₁ by coordinate descent (few features)."""
    d = np.zeros_like(w)
    for _ in range(200):
        largest = 0.0
        for j in range(w.size):
            hjj = h[j, j]
            if hjj <= 1e-12:  # a constant-zero feature: the penalty sends its weight to 0
                new = -w[j]
            else:
                target = w[j] - (g[j] + h[j] @ d - hjj * d[j]) / hjj
                new = np.sign(target) * max(abs(target) - 1.0 / hjj, 0.0) - w[j]
            largest = max(largest, abs(new - d[j]))
            d[j] = new
        if largest < 1e-13:
            break
    return d


def fit_l1_logistic(X: np.ndarray, y: np.ndarray, weight: np.ndarray, C: float,
                    start: np.ndarray | None = None, max_iter: int = 100) -> np.ndarray:
    """argmin_w ‖w‖₁ + C Σᵢ weightᵢ · CE(yᵢ, σ(xᵢ·w)) with soft labels y ∈ [0, 1]
    (proximal Newton with a backtracking line search).

    >>> X = np.array([[1.0], [1.0], [1.0], [1.0]])
    >>> w = fit_l1_logistic(X, np.array([1.0, 1.0, 1.0, 0.0]), np.ones(4), C=1e4)
    >>> round(float(1 / (1 + np.exp(-w[0]))), 4)   # the mean label, 3/4, for a weak penalty
    0.75
    >>> fit_l1_logistic(X, np.array([1.0, 1.0, 1.0, 0.0]), np.ones(4), C=1e-4)   # all penalty
    array([0.])
    """
    w = np.zeros(X.shape[1]) if start is None else start.copy()
    f = _loss(w, X, y, weight, C)
    for _ in range(max_iter):
        mu = 1.0 / (1.0 + np.exp(-(X @ w)))
        g = C * (X.T @ (weight * (mu - y)))
        h = C * ((X.T * (weight * mu * (1.0 - mu))) @ X)
        d = _newton_direction(w, g, h)
        decrease = float(g @ d + np.abs(w + d).sum() - np.abs(w).sum())
        if decrease > -1e-12 * (1.0 + abs(f)):
            break
        step = 1.0
        while True:
            candidate = w + step * d
            f_new = _loss(candidate, X, y, weight, C)
            if f_new <= f + 0.25 * step * decrease or step < 1e-10:
                break
            step *= 0.5
        w, f = candidate, f_new
    return w


def _cv_loss(X: np.ndarray, y: np.ndarray, weight: np.ndarray, folds: np.ndarray, Cs: tuple[float, ...]) -> np.ndarray:
    """Mean over folds of the held-out weighted log-loss, one value per C (C ascending,
    each fit warm-started from the previous C's weights)."""
    losses = np.zeros(len(Cs))
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        w = None
        for k, C in enumerate(Cs):
            w = fit_l1_logistic(X[train], y[train], weight[train], C, start=w)
            z = X[test] @ w
            cross_entropy = y[test] * np.logaddexp(0.0, -z) + (1.0 - y[test]) * np.logaddexp(0.0, z)
            losses[k] += float(np.mean(weight[test] * cross_entropy))
    return losses / len(np.unique(folds))


def length_controlled_win_rate(
    preference: np.ndarray,
    len_model: np.ndarray,
    len_baseline: np.ndarray,
    difficulty: np.ndarray,
    *,
    gamed: GamedRows | None = None,
    regularize_to_baseline: float = 0.2,
    n_splits: int = 5,
    Cs: tuple[float, ...] = C_GRID,
) -> LengthControlled | None:
    """The length-controlled win rate of one model against the baseline; None with fewer
    than :data:`MIN_PROMPTS` prompts (too few to cross-validate).

    ``preference`` ∈ [1, 2] per prompt (2 = the model's answer is better); ``len_*`` the
    two answers' lengths; ``difficulty`` the prompt's difficulty.
    """
    preference = np.asarray(preference, dtype=float)
    if preference.size < max(MIN_PROMPTS, n_splits):
        return None
    difficulty = np.asarray(difficulty, dtype=float)
    std_delta = standardised_length_difference(len_model, len_baseline)
    X = np.column_stack([np.tanh(std_delta), difficulty, np.ones_like(difficulty)])
    y = preference - 1.0
    weight = np.ones_like(y)
    if gamed is not None and gamed.label.size:
        X_gamed = np.column_stack([np.tanh(gamed.std_delta_len), gamed.difficulty, np.zeros_like(gamed.difficulty)])
        X, y = np.vstack([X_gamed, X]), np.concatenate([gamed.label, y])
        weight = np.concatenate([np.full(gamed.label.size, regularize_to_baseline / 2.0), weight])
    folds = np.arange(y.size) % n_splits
    losses = _cv_loss(X, y, weight, folds, Cs)
    C = Cs[int(np.argmin(losses))]
    w = fit_l1_logistic(X, y, weight, C)
    X_test = np.column_stack([np.zeros_like(difficulty), difficulty, np.ones_like(difficulty)])
    predicted = 1.0 / (1.0 + np.exp(-(X_test @ w)))
    se = float(np.std(predicted, ddof=1) / np.sqrt(predicted.size))
    return LengthControlled(100.0 * float(predicted.mean()), 100.0 * se, dict(zip(FEATURES, map(float, w))), C)
