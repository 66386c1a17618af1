"""The positive pool M_w and the negative pool M_l of a round: source rules and weights,
resolved against the `models` table (docs/design.md, "1. The method", Pools).

- *cells* are rows of kind 'model' in the base model's family with a version and a size;
  a model of another family joins a pool only when named explicitly;
- ``newest-largest``: among the cells of the largest size, the highest version;
- ``older-or-smaller``: version < base version OR size < base size;
  ``older-and-smaller``: both. A rule never yields the base model itself nor a positive source;
- ``human``: the built-in source of human answers.

Weights: an item's weight (default 1) is shared evenly by the sources it resolves to; a
weight keyed by a resolved source name overrides that share. Weights are then normalised to
sum to 1 per pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from tso_data.errors import TSODataError
from tso_data.matrix import version_key

if TYPE_CHECKING:
    from tso_data.pairs.config import RoundConfig

NEWEST_LARGEST = "newest-largest"
HUMAN = "human"
OLDER_OR_SMALLER = "older-or-smaller"
OLDER_AND_SMALLER = "older-and-smaller"
POSITIVE_RULES = (NEWEST_LARGEST,)
NEGATIVE_RULES = (OLDER_OR_SMALLER, OLDER_AND_SMALLER)

Model = dict[str, Any]  # a row of the models table


@dataclass(frozen=True)
class ResolvedPools:
    """Pools resolved against the models table: source name → normalised weight."""

    base_model: str
    base_family: str | None
    positive: dict[str, float]
    negative: dict[str, float]
    # rule/name item -> the sources it resolved to (for the dry-run plan)
    membership: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Matrix:
    """The models table seen from one round's base model."""

    by_name: dict[str, Model]
    base: Model
    cells: list[Model]  # the family's models with an orderable version and a size
    off_axis: str  # why other models of the family are not cells ('' if none)


def resolve_pools(config: RoundConfig, models: pl.DataFrame) -> ResolvedPools:
    """Resolve pool rules and names against ``models`` (columns of the models table)."""
    matrix = _matrix(config.base_model, models)
    warnings: list[str] = []
    positive_items = {item: _positive_sources(item, config.base_model, matrix) for item in config.positive_sources}
    positive = _weighted(positive_items, config.positive_weights, "positive")
    if config.base_model in positive:
        warnings.append(
            f"the base model {config.base_model!r} is in the positive pool: it will be pulled towards itself"
        )
    negative_items = {
        item: _negative_sources(item, config.base_model, positive, matrix) for item in config.negative_sources
    }
    if config.base_model in config.negative_sources and config.base_model not in NEGATIVE_RULES:
        warnings.append(
            f"the base model {config.base_model!r} is in the negative pool: the paper (Table 4) reports "
            "this causes reverse alignment"
        )
    negative = _weighted(negative_items, config.negative_weights, "negative")
    membership = {f"positive:{k}": v for k, v in positive_items.items()}
    membership.update({f"negative:{k}": v for k, v in negative_items.items()})
    if config.mix_matrix > 0:
        if not positive:
            raise TSODataError("positive pool is empty (mix.matrix > 0 needs positive sources)")
        if not negative:
            raise TSODataError(
                f"negative pool is empty: no cell of family {matrix.base['family']!r} matches "
                f"{', '.join(config.negative_sources)} for base {config.base_model!r}; "
                f"list negatives explicitly or set mix.matrix = 0{matrix.off_axis}"
            )
    return ResolvedPools(
        base_model=config.base_model, base_family=matrix.base["family"], positive=positive, negative=negative,
        membership=membership, warnings=warnings,
    )


def _matrix(base_model: str, models: pl.DataFrame) -> _Matrix:
    by_name = {row["name"]: row for row in models.to_dicts()}
    base = by_name.get(base_model)
    if base is None:
        known = ", ".join(sorted(n for n, r in by_name.items() if r["kind"] == "model")) or "none"
        raise TSODataError(
            f"base_model {base_model!r} is not in the models table (known: {known}); "
            "add it with `tso-data models add`"
        )
    if base["kind"] != "model":
        raise TSODataError(f"base_model {base_model!r} is a {base['kind']} source, not a model")
    family = base["family"]
    members = [r for r in by_name.values() if r["kind"] == "model" and r["family"] == family and family is not None]
    cells = [r for r in members if _version(r) is not None and r["size_b"] is not None]
    return _Matrix(by_name, base, cells, _off_axis(members))


def _named(item: str, pool: str, matrix: _Matrix) -> list[str]:
    if item not in matrix.by_name:
        raise TSODataError(f"{pool}.sources: unknown source {item!r} (not a rule and not in the models table)")
    return [item]


def _positive_sources(item: str, base_model: str, matrix: _Matrix) -> list[str]:
    """The sources one item of positive.sources resolves to."""
    if item == HUMAN:
        return [HUMAN]
    if item != NEWEST_LARGEST:
        return _named(item, "positive", matrix)
    if not matrix.cells:
        raise TSODataError(
            f"positive.sources: '{NEWEST_LARGEST}' needs cells of family {matrix.base['family']!r} with "
            f"an orderable version and a size; none found{matrix.off_axis}"
        )
    largest = max(r["size_b"] for r in matrix.cells)
    top = max((r for r in matrix.cells if r["size_b"] == largest), key=lambda r: (_version(r), r["name"]))
    if top["name"] == base_model:
        raise TSODataError(
            f"positive.sources: '{NEWEST_LARGEST}' resolves to the base model "
            f"{base_model!r} itself; add a larger or newer cell or list positives explicitly"
        )
    return [top["name"]]


def _negative_sources(item: str, base_model: str, positive: dict[str, float], matrix: _Matrix) -> list[str]:
    """The sources one item of negative.sources resolves to."""
    if item not in NEGATIVE_RULES:
        named = _named(item, "negative", matrix)
        if item in positive:
            raise TSODataError(f"negative.sources: {item!r} is also a positive source")
        return named
    base_version, base_size = _version(matrix.base), matrix.base["size_b"]
    if base_version is None or base_size is None:
        why = "its version is not orderable" if base_version is None else "its size is unknown"
        raise TSODataError(
            f"negative.sources: rule {item!r} needs the base model's version and size, and {why} "
            f"({base_model!r} has version={matrix.base['version']!r}, size_b={base_size!r}); "
            "re-add it with --version-order N or --size-b S"
        )
    hits = []
    for cell in sorted(matrix.cells, key=lambda r: (r["size_b"], _version(r), r["name"])):
        older, smaller = _version(cell) < base_version, cell["size_b"] < base_size
        hit = (older or smaller) if item == OLDER_OR_SMALLER else (older and smaller)
        if hit and cell["name"] != base_model and cell["name"] not in positive:
            hits.append(cell["name"])
    return hits


def _version(row: Model) -> tuple[int, ...] | None:
    return version_key(row["version"], row["version_order"])


def _off_axis(members: list[Model]) -> str:
    """Why models of the family are not cells of the matrix (for an error message), or ''."""
    reasons = []
    for r in sorted(members, key=lambda r: r["name"]):
        if _version(r) is None:
            reasons.append(f"{r['name']} (version {r['version']!r} is not orderable: re-add it with --version-order N)")
        elif r["size_b"] is None:
            reasons.append(f"{r['name']} (no size: re-add it with --size-b S)")
    return f"; off the matrix: {', '.join(reasons)}" if reasons else ""


def _weighted(items: dict[str, list[str]], weights: dict[str, float], pool: str) -> dict[str, float]:
    members = {m for ms in items.values() for m in ms}
    for key in weights:
        if key not in items and key not in members:
            raise TSODataError(
                f"{pool}.weights: {key!r} is neither an item of {pool}.sources nor a source it resolves to"
            )
    out: dict[str, float] = {}
    for item, ms in items.items():
        share = weights.get(item, 1.0) / len(ms) if ms else 0.0
        for m in ms:
            if m not in out:
                out[m] = weights.get(m, share)
    out = {k: v for k, v in out.items() if v > 0}
    total = sum(out.values())
    if items and members and total <= 0:
        raise TSODataError(f"{pool}.weights: weights sum to zero")
    return {k: v / total for k, v in sorted(out.items())} if total > 0 else {}
