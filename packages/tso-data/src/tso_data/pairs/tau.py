"""τ, the threshold that splits the base model's scored answers into positives and negatives
(paper eqs. 7–8; docs/design.md, "1. The method", Evaluation correction and τ).

τ is the mean judge score over the round's scored base answers (``global-mean``, the
paper), or per prompt (``prompt-mean``), or a fixed value. An answer scoring > τ is
positive, ≤ τ negative. `tso-data judge scores` shows the same τ the build uses.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from tso_data.errors import TSODataError

TauMode = Literal["global-mean", "prompt-mean", "fixed"]
TAU_MODES: tuple[str, ...] = ("global-mean", "prompt-mean", "fixed")


def tau_per_prompt(
    base_scores: pl.DataFrame, mode: TauMode, value: float | None = None
) -> tuple[pl.DataFrame, float | None]:
    """τ for every prompt of ``base_scores`` (columns ``prompt_id``, ``score``: the round's
    scored base answers). Returns (``prompt_id, tau`` frame, global τ or None for per-prompt).

    - ``global-mean`` (default, the paper): τ = mean of all base scores;
    - ``prompt-mean``: τ = mean of that prompt's base scores;
    - ``fixed``: τ = ``value``.

    >>> s = pl.DataFrame({"prompt_id": ["p", "p", "q"], "score": [2.0, 4.0, 9.0]})
    >>> frame, tau = tau_per_prompt(s, "global-mean"); tau
    5.0
    >>> tau_per_prompt(s, "prompt-mean")[0].sort("prompt_id").rows()
    [('p', 3.0), ('q', 9.0)]
    >>> tau_per_prompt(s, "fixed", 4.0)[1]
    4.0
    >>> tau_per_prompt(s.clear(), "global-mean")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: no scored base answers: τ (global-mean) needs judge scores of the base model's
    responses; run `tso-data judge` first, or set tau.mode = "fixed"
    """
    prompts = base_scores.select("prompt_id").unique()
    if mode == "fixed":
        if value is None:
            raise TSODataError('tau.mode = "fixed" needs tau.value (or --tau)')
        return prompts.with_columns(pl.lit(float(value)).alias("tau")), float(value)
    if mode not in TAU_MODES:
        raise TSODataError(f"tau.mode {mode!r}: expected one of {', '.join(TAU_MODES)}")
    scored = base_scores.filter(pl.col("score").is_not_null())
    if scored.height == 0:
        raise TSODataError(
            f"no scored base answers: τ ({mode}) needs judge scores of the base model's "
            'responses; run `tso-data judge` first, or set tau.mode = "fixed"'
        )
    if mode == "global-mean":
        tau = float(scored.get_column("score").mean())  # type: ignore[arg-type]
        return prompts.with_columns(pl.lit(tau).alias("tau")), tau
    per = scored.group_by("prompt_id").agg(pl.col("score").mean().alias("tau"))
    return per, None


def split_at_tau(base_answers: pl.DataFrame, mode: TauMode, value: float | None) -> tuple[pl.DataFrame, float | None]:
    """The scored base answers (columns prompt_code, score, ...) with ``tau`` and ``above_tau``
    (score > τ: a positive; otherwise a negative) added, and the global τ (None for per-prompt).

    >>> answers = pl.DataFrame({"prompt_code": [0, 0, 1], "score": [2.0, 4.0, 9.0]})
    >>> split, tau = split_at_tau(answers, "global-mean", None)
    >>> tau, split["above_tau"].to_list()
    (5.0, [False, False, True])
    >>> split_at_tau(answers, "prompt-mean", None)[0]["above_tau"].to_list()
    [False, True, False]
    """
    # one τ for all prompts (global mean, fixed) needs no per-prompt frame: key them all alike
    key = pl.col("prompt_code") if mode == "prompt-mean" else pl.lit(0, dtype=pl.UInt32)
    taus, tau = tau_per_prompt(base_answers.select(key.alias("prompt_id"), "score"), mode, value)
    if tau is not None:
        with_tau = base_answers.with_columns(tau=pl.lit(tau))
    else:
        per_prompt = taus.rename({"prompt_id": "prompt_code"})
        with_tau = base_answers.join(per_prompt, on="prompt_code", how="inner", maintain_order="left")
    return with_tau.with_columns(above_tau=pl.col("score") > pl.col("tau")), tau
