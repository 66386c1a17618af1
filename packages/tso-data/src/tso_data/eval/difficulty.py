"""Instruction difficulty for the length-controlled win rate, estimated from the catalog's
own models when the user gives none.

AlpacaEval computed its difficulties once from a joint logistic regression over every
model of its leaderboard: each model has its own intercept and length weight, each
instruction its own term, and that term is the instruction's difficulty (its sign: higher
= the models beat the baseline more often on it). A catalog holds a handful of models
rather than AlpacaEval's hundred-odd, so the instruction terms here get a standard-normal
prior (an L2 penalty of ½γ²): with few models, an instruction every model wins would
otherwise get an unbounded term, and with one model the terms would simply copy its
preferences. The prior shrinks each term towards 0 by an amount that falls as more models
answer the instruction, so the estimate approaches the unpenalised joint fit as the
catalog grows. Model intercepts and length weights get a negligible penalty (1e-3) that
only keeps them finite for a model that wins every prompt.

The fit alternates two exact Newton updates until nothing moves: all models' (intercept,
length weight) pairs given the instruction terms, then all instruction terms given the
models; each is vectorised over models or instructions.
"""

from __future__ import annotations

import numpy as np

PRIOR_PRECISION = 1.0
MODEL_PRECISION = 1e-3


def estimate_difficulty(
    model_code: np.ndarray,
    prompt_code: np.ndarray,
    label: np.ndarray,
    length_feature: np.ndarray,
    n_prompts: int,
    *,
    max_iter: int = 500,
    tol: float = 1e-8,
) -> np.ndarray:
    """One difficulty per prompt code (0..n_prompts-1) from rows (model, prompt, label
    p − 1 ∈ [0, 1], tanh of the standardised length difference).

    An instruction every model wins gets a higher term than one every model loses:

    >>> d = estimate_difficulty(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]),
    ...                         np.array([1.0, 0.0, 1.0, 0.0]), np.zeros(4), 2)
    >>> bool(d[0] > 0 > d[1]), round(float(d[0] + d[1]), 6)
    (True, 0.0)
    """
    model_code = np.asarray(model_code, dtype=np.int64)
    prompt_code = np.asarray(prompt_code, dtype=np.int64)
    y = np.asarray(label, dtype=float)
    t = np.asarray(length_feature, dtype=float)
    n_models = int(model_code.max()) + 1 if model_code.size else 0
    intercept, slope = np.zeros(n_models), np.zeros(n_models)
    gamma = np.zeros(n_prompts)
    for _ in range(max_iter):
        z = intercept[model_code] + slope[model_code] * t + gamma[prompt_code]
        mu = 1.0 / (1.0 + np.exp(-z))
        r, w = mu - y, mu * (1.0 - mu)
        step_a, step_b = _model_step(model_code, n_models, r, w, t, intercept, slope)
        intercept -= step_a
        slope -= step_b
        z = intercept[model_code] + slope[model_code] * t + gamma[prompt_code]
        mu = 1.0 / (1.0 + np.exp(-z))
        grad = np.bincount(prompt_code, mu - y, n_prompts) + PRIOR_PRECISION * gamma
        hess = np.bincount(prompt_code, mu * (1.0 - mu), n_prompts) + PRIOR_PRECISION
        step_g = np.clip(grad / hess, -5.0, 5.0)
        gamma -= step_g
        largest = max(float(np.abs(step_a).max(initial=0.0)), float(np.abs(step_b).max(initial=0.0)),
                      float(np.abs(step_g).max(initial=0.0)))
        if largest < tol:
            break
    return gamma


def _model_step(code: np.ndarray, n: int, r: np.ndarray, w: np.ndarray, t: np.ndarray,
                intercept: np.ndarray, slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton steps for every model's (intercept, length weight), as 2×2 solves."""
    ga = np.bincount(code, r, n) + MODEL_PRECISION * intercept
    gb = np.bincount(code, r * t, n) + MODEL_PRECISION * slope
    haa = np.bincount(code, w, n) + MODEL_PRECISION
    hab = np.bincount(code, w * t, n)
    hbb = np.bincount(code, w * t * t, n) + MODEL_PRECISION
    det = haa * hbb - hab * hab
    step_a = (hbb * ga - hab * gb) / det
    step_b = (haa * gb - hab * ga) / det
    return np.clip(step_a, -5.0, 5.0), np.clip(step_b, -5.0, 5.0)
