"""`tso-data eval` as functions: :func:`leaderboard` computes the leaderboard from what the
catalog holds; :func:`run_eval` first generates the answers and judgments it lacks.

    from tso_data.eval import leaderboard
    board = leaderboard("catalogs/mine", judge="judge-7b", family="acme", baseline="acme-v1-7b")
    board.table          # a Polars frame, one row per model
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.eval.board import Leaderboard, build
from tso_data.eval.data import EvalData, Selection, load
from tso_data.eval.selection import check_split, has_answers, read_difficulty, resolve_models
from tso_data.eval.store import TABLE as VERDICTS
from tso_data.eval.store import merge_verdicts
from tso_data.shards import merge_shards, pending_shards

PAIRWISE_RUBRIC = "pairwise"


def as_catalog(catalog: Catalog | str | os.PathLike[str]) -> Catalog:
    return catalog if isinstance(catalog, Catalog) else Catalog.open(catalog)


def merge_pending(catalog: Catalog) -> None:
    """Merge judgment and verdict rows an interrupted run left in shards."""
    if pending_shards(catalog, "judgments"):
        merge_shards(catalog, "judgments", replace=True)
    if pending_shards(catalog, VERDICTS):
        merge_verdicts(catalog)


def leaderboard(
    catalog: Catalog | str | os.PathLike[str],
    *,
    judge: str,
    models: Sequence[str] = (),
    family: str | None = None,
    baseline: str | None = None,
    split: str = "heldout",
    rubrics: Sequence[str] = ("overall",),
    pairwise: bool = False,
    pairwise_rubric: str = PAIRWISE_RUBRIC,
    difficulty: pl.DataFrame | str | os.PathLike[str] | None = None,
    prompt_source: str | None = None,
) -> Leaderboard:
    """The leaderboard of stored judgments (and, with ``pairwise``, stored verdicts against
    ``baseline``) on ``split``. Calls no model and writes nothing (except merging shards an
    interrupted run left). ``difficulty``: a frame ``prompt_id, difficulty`` or a file
    (see :func:`tso_data.eval.selection.read_difficulty`) for the length-controlled win rate;
    without it, difficulties are estimated from the compared models."""
    catalog = as_catalog(catalog)
    if pairwise and baseline is None:
        raise TSODataError("--pairwise compares each model with a baseline: name it with --baseline")
    if not rubrics:
        raise TSODataError("name at least one --rubric")
    merge_pending(catalog)
    with catalog.connect(read_only=True) as con:
        n_prompts = check_split(con, split)
        names = resolve_models(con, judge, models, family, baseline)
        given: pl.DataFrame | None = None
        if isinstance(difficulty, pl.DataFrame):
            given = difficulty
        elif difficulty is not None:
            given = read_difficulty(con, Path(difficulty), prompt_source)
        selection = Selection(judge=judge, models=names, split=split, baseline=baseline, rubrics=tuple(rubrics),
                              pairwise_rubric=pairwise_rubric if pairwise else None)
        data = load(con, selection, n_prompts)
        if baseline is not None and not _compared(data, baseline) and not has_answers(con, baseline, split):
            raise TSODataError(f"baseline {baseline!r} has no answers on split {split!r}")
    if given is not None and data.preferences is not None:
        _check_coverage(given, data.preferences, difficulty)
    return build(data, selection, given)


def _compared(data: EvalData, baseline: str) -> bool:
    """Whether the baseline has judged answers or verdicts on the split (then it has answers:
    the cheap check, so the full one runs only when this fails)."""
    judged = data.pointwise.filter(pl.col("model") == baseline).height > 0
    return judged or (data.preferences is not None and data.preferences.height > 0)


def _check_coverage(given: pl.DataFrame, preferences: pl.DataFrame, origin: object) -> None:
    missing = preferences.select("prompt_id").unique().join(given.select("prompt_id"), on="prompt_id", how="anti")
    if missing.height:
        where = "the difficulty frame" if isinstance(origin, pl.DataFrame) else str(origin)
        raise TSODataError(f"{where}: no difficulty for {missing.height} of the compared prompts "
                           f"(e.g. prompt_id {missing.get_column('prompt_id').sort()[0]})")
