"""The round configuration of `tso-data build`: ``<catalog>/round.toml``, overridden per
round by a ``[round.R]`` table in the same file, overridden by command-line flags.

Every key, its default and its meaning are listed in :data:`DEFAULTS` and the README
("round.toml reference"). Unknown keys are errors, never silently ignored.

Pool resolution against the `models` table (DESIGN.md §1):

- *cells* are rows of kind 'model' in the base model's family with a version and a size;
  a model of another family joins a pool only when named explicitly;
- ``newest-largest``: among the cells of the largest size, the highest version;
- ``older-or-smaller``: version < base version OR size < base size;
  ``older-and-smaller``: both. A rule never yields the base model itself nor a positive source;
- ``human``: the built-in source of human answers.
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from tso_data.errors import TSODataError
from tso_data.ids import canonical_json
from tso_data.matrix import version_key
from tso_data.scoring import TAU_MODES, check_weights

NEWEST_LARGEST = "newest-largest"
HUMAN = "human"
OLDER_OR_SMALLER = "older-or-smaller"
OLDER_AND_SMALLER = "older-and-smaller"
POSITIVE_RULES = (NEWEST_LARGEST,)
NEGATIVE_RULES = (OLDER_OR_SMALLER, OLDER_AND_SMALLER)
PAIRINGS = ("best-worst", "random")

# Every key of round.toml with its default. Tables are nested dicts.
DEFAULTS: dict[str, Any] = {
    "base_model": None,  # required: models.name of the round's base model
    "pairs": None,  # N, total pairs; None = as many as the mix allows
    "max_pairs_per_prompt": 1,  # per kind: at most this many matrix and this many base pairs per prompt
    "seed": 43,
    "split": "train",  # prompts.split the pairs are built from
    "judge": None,  # judgments.judge whose scores count; required if several judges exist
    "mix": {"matrix": 0.5, "base": 0.5},
    "positive": {"sources": [NEWEST_LARGEST, HUMAN], "weights": {}},
    "negative": {"sources": [OLDER_OR_SMALLER], "weights": {}},
    "tau": {"mode": "global-mean", "value": None},
    "base_pairs": {"pairing": "best-worst"},
    "rubric_weights": {},  # rubric -> weight; empty = equal over the rubrics present
}
# Tables whose keys are free (names of sources / rubrics), not checked against DEFAULTS.
FREE_TABLES = {("positive", "weights"), ("negative", "weights"), ("rubric_weights",)}


@dataclass(frozen=True)
class RoundConfig:
    """The merged, validated configuration of one round (before pool resolution)."""

    round: int
    base_model: str
    pairs: int | None
    max_pairs_per_prompt: int
    seed: int
    split: str
    judge: str | None
    mix_matrix: float
    mix_base: float
    positive_sources: tuple[str, ...]
    positive_weights: dict[str, float]
    negative_sources: tuple[str, ...]
    negative_weights: dict[str, float]
    tau_mode: str
    tau_value: float | None
    pairing: str
    rubric_weights: dict[str, float]
    # about the configuration itself (e.g. a round without its own table); not part of it
    notes: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Nested like round.toml (what goes into the snapshot's ``tso.config``)."""
        return {
            "round": self.round,
            "base_model": self.base_model,
            "pairs": self.pairs,
            "max_pairs_per_prompt": self.max_pairs_per_prompt,
            "seed": self.seed,
            "split": self.split,
            "judge": self.judge,
            "mix": {"matrix": self.mix_matrix, "base": self.mix_base},
            "positive": {"sources": list(self.positive_sources), "weights": self.positive_weights},
            "negative": {"sources": list(self.negative_sources), "weights": self.negative_weights},
            "tau": {"mode": self.tau_mode, "value": self.tau_value},
            "base_pairs": {"pairing": self.pairing},
            "rubric_weights": self.rubric_weights,
        }

    def to_json(self) -> str:
        return canonical_json(self.to_dict())


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


# -- loading ---------------------------------------------------------------------------


def load_round_config(
    path: Path | None, round_: int, overrides: Mapping[str, Any] | None = None
) -> RoundConfig:
    """defaults ← round.toml top level ← ``[round.R]`` ← ``overrides`` (flags, nested dict)."""
    raw = _read_toml(path) if path is not None and path.exists() else {}
    where = str(path) if path is not None else "round config"
    rounds = raw.pop("round", {})
    if not isinstance(rounds, dict):
        raise TSODataError(f"{where}: 'round' must be a table of [round.R] tables")
    merged = copy.deepcopy(DEFAULTS)
    _merge_checked(merged, raw, where, ())
    for key, table in rounds.items():
        if not str(key).isdigit() or not isinstance(table, dict):
            raise TSODataError(f"{where}: [round.{key}]: expected a table named by a round number")
    if str(round_) in rounds:
        _merge_checked(merged, rounds[str(round_)], f"{where} [round.{round_}]", ())
    if overrides:
        _merge_checked(merged, dict(overrides), "command line", ())
    notes = _round_table_notes(rounds, round_, merged["base_model"], where, overrides)
    return replace(_validate(merged, round_, where), notes=notes)


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TSODataError(f"{path}: not a file (the round configuration is a TOML file)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TSODataError(f"{path}: invalid TOML: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError:
        raise TSODataError(f"{path}: not valid UTF-8") from None
    except RecursionError:
        raise TSODataError(f"{path}: invalid TOML: nested too deeply") from None
    except OSError as exc:
        raise TSODataError(f"{path}: cannot read ({exc.strerror})") from None


def _round_table_notes(
    rounds: dict[str, Any], round_: int, base: object, where: str, overrides: Mapping[str, Any] | None
) -> tuple[str, ...]:
    """Round R > 1 without a [round.R] table would silently reuse the top-level base model
    (round 1's) and rebuild round 1's pairs under a new id: refused when the file names the
    bases of other rounds (R's was forgotten), else a warning; --base-model settles it."""
    if round_ <= 1 or str(round_) in rounds or (overrides and "base_model" in overrides):
        return ()
    how = (f'add [round.{round_}] with base_model = "..." (the policy trained in round {round_ - 1}) '
           "or pass --base-model NAME")
    if rounds:
        named = ", ".join(f"[round.{k}]" for k in sorted(rounds, key=int))
        raise TSODataError(f"{where}: no [round.{round_}] table (the file has {named}): {how}")
    return (f"{where} has no [round.{round_}] table: round {round_} uses the top-level base_model {base!r}; "
            f"if that is round 1's base, the pairs are round 1's again: {how}",)


def _merge_checked(into: dict[str, Any], new: Mapping[str, Any], where: str, prefix: tuple[str, ...]) -> None:
    for key, value in new.items():
        path = (*prefix, key)
        dotted = ".".join(path)
        if prefix in FREE_TABLES:
            into[key] = value
            continue
        if key not in into:
            known = ", ".join(sorted(into))
            raise TSODataError(f"{where}: unknown key '{dotted}' (known here: {known})")
        if isinstance(into[key], dict) and path not in FREE_TABLES:
            if not isinstance(value, dict):
                raise TSODataError(f"{where}: field '{dotted}': expected a table")
            _merge_checked(into[key], value, where, path)
        elif path in FREE_TABLES:
            if not isinstance(value, dict):
                raise TSODataError(f"{where}: field '{dotted}': expected a table of name = weight")
            into[key] = dict(value)
        else:
            into[key] = value


def _validate(c: dict[str, Any], round_: int, where: str) -> RoundConfig:
    def fail(fieldname: str, msg: str) -> TSODataError:
        return TSODataError(f"{where}: field '{fieldname}': {msg}")

    if round_ < 1:
        raise TSODataError(f"--round must be >= 1, got {round_}")
    if not c["base_model"] or not isinstance(c["base_model"], str):
        raise fail("base_model", "required (the round's base model, a models.name); set it in round.toml or pass --base-model")
    pairs = c["pairs"]
    if pairs is not None and (not isinstance(pairs, int) or isinstance(pairs, bool) or pairs < 1):
        raise fail("pairs", f"expected a positive integer, got {pairs!r}")
    cap = c["max_pairs_per_prompt"]
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise fail("max_pairs_per_prompt", f"expected an integer >= 1, got {cap!r}")
    seed = c["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise fail("seed", f"expected an integer from 0 to 2^63 - 1, got {seed!r}")
    mix = {k: _number(v, f"mix.{k}", where) for k, v in c["mix"].items()}
    check_weights(mix, f"{where}: mix")
    total = mix["matrix"] + mix["base"]
    for name in ("positive", "negative"):
        sources = c[name]["sources"]
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise fail(f"{name}.sources", "expected a list of source names or rules")
        weights = {str(k): _number(v, f"{name}.weights.{k}", where) for k, v in c[name]["weights"].items()}
        check_weights(weights, f"{where}: {name}.weights")
        c[name]["weights"] = weights
    for rule in c["positive"]["sources"]:
        if rule in NEGATIVE_RULES:
            raise fail("positive.sources", f"{rule!r} is a negative-pool rule")
    for rule in c["negative"]["sources"]:
        if rule in POSITIVE_RULES:
            raise fail("negative.sources", f"{rule!r} is a positive-pool rule")
    tau_mode = c["tau"]["mode"]
    if tau_mode not in TAU_MODES:
        raise fail("tau.mode", f"expected one of {', '.join(TAU_MODES)}, got {tau_mode!r}")
    tau_value = c["tau"]["value"]
    if tau_value is not None:
        tau_value = _number(tau_value, "tau.value", where)
        if not math.isfinite(tau_value):
            raise fail("tau.value", f"τ must be a finite number (a score on the judge's scale), got {tau_value!r}")
    if tau_mode == "fixed" and tau_value is None:
        raise fail("tau.value", 'tau.mode = "fixed" needs a value (or --tau)')
    pairing = c["base_pairs"]["pairing"]
    if pairing not in PAIRINGS:
        raise fail("base_pairs.pairing", f"expected one of {', '.join(PAIRINGS)}, got {pairing!r}")
    rubric_weights = {str(k): _number(v, f"rubric_weights.{k}", where) for k, v in c["rubric_weights"].items()}
    check_weights(rubric_weights, f"{where}: rubric_weights")
    for key in ("split", "judge"):
        if c[key] is not None and not isinstance(c[key], str):
            raise fail(key, f"expected a string, got {c[key]!r}")
    return RoundConfig(
        round=round_,
        base_model=c["base_model"],
        pairs=pairs,
        max_pairs_per_prompt=cap,
        seed=seed,
        split=c["split"],
        judge=c["judge"],
        mix_matrix=mix["matrix"] / total,
        mix_base=mix["base"] / total,
        positive_sources=tuple(c["positive"]["sources"]),
        positive_weights=c["positive"]["weights"],
        negative_sources=tuple(c["negative"]["sources"]),
        negative_weights=c["negative"]["weights"],
        tau_mode=tau_mode,
        tau_value=tau_value,
        pairing=pairing,
        rubric_weights=rubric_weights,
    )


def _number(value: Any, fieldname: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TSODataError(f"{where}: field '{fieldname}': expected a number, got {value!r}")
    return float(value)


# -- pool resolution ------------------------------------------------------------------


def resolve_pools(config: RoundConfig, models: pl.DataFrame) -> ResolvedPools:
    """Resolve pool rules and names against ``models`` (columns of the models table).

    Weights: an item's weight (default 1) is shared evenly by the sources it resolves to;
    a weight keyed by a resolved source name overrides that share. Weights are then
    normalised to sum to 1 per pool.
    """
    by_name = {row["name"]: row for row in models.to_dicts()}
    base = by_name.get(config.base_model)
    if base is None:
        known = ", ".join(sorted(n for n, r in by_name.items() if r["kind"] == "model")) or "none"
        raise TSODataError(
            f"base_model {config.base_model!r} is not in the models table (known: {known}); "
            "add it with `tso-data models add`"
        )
    if base["kind"] != "model":
        raise TSODataError(f"base_model {config.base_model!r} is a {base['kind']} source, not a model")
    family = base["family"]
    members = [r for r in by_name.values() if r["kind"] == "model" and r["family"] == family and family is not None]
    cells = [r for r in members if _key(r) is not None and r["size_b"] is not None]
    off_axis = _off_axis(members)
    warnings: list[str] = []
    membership: dict[str, list[str]] = {}

    def named(item: str, pool: str) -> list[str]:
        if item not in by_name:
            raise TSODataError(
                f"{pool}.sources: unknown source {item!r} (not a rule and not in the models table)"
            )
        return [item]

    # positives
    positive_items: dict[str, list[str]] = {}
    for item in config.positive_sources:
        if item == NEWEST_LARGEST:
            if not cells:
                raise TSODataError(
                    f"positive.sources: '{NEWEST_LARGEST}' needs cells of family {family!r} with "
                    f"an orderable version and a size; none found{off_axis}"
                )
            largest = max(r["size_b"] for r in cells)
            top = max((r for r in cells if r["size_b"] == largest), key=lambda r: (_key(r), r["name"]))
            if top["name"] == config.base_model:
                raise TSODataError(
                    f"positive.sources: '{NEWEST_LARGEST}' resolves to the base model "
                    f"{config.base_model!r} itself; add a larger or newer cell or list positives explicitly"
                )
            positive_items[item] = [top["name"]]
        elif item == HUMAN:
            positive_items[item] = [HUMAN]
        else:
            positive_items[item] = named(item, "positive")
    positive = _weighted(positive_items, config.positive_weights, "positive")
    if config.base_model in positive:
        warnings.append(
            f"the base model {config.base_model!r} is in the positive pool: it will be pulled towards itself"
        )

    # negatives
    negative_items: dict[str, list[str]] = {}
    for item in config.negative_sources:
        if item in NEGATIVE_RULES:
            bv, bs = _key(base), base["size_b"]
            if bv is None or bs is None:
                why = "its version is not orderable" if bv is None else "its size is unknown"
                raise TSODataError(
                    f"negative.sources: rule {item!r} needs the base model's version and size, and {why} "
                    f"({config.base_model!r} has version={base['version']!r}, size_b={bs!r}); "
                    "re-add it with --version-order N or --size-b S"
                )
            hits = []
            for r in sorted(cells, key=lambda r: (r["size_b"], _key(r), r["name"])):
                older, smaller = _key(r) < bv, r["size_b"] < bs
                hit = (older or smaller) if item == OLDER_OR_SMALLER else (older and smaller)
                if hit and r["name"] != config.base_model and r["name"] not in positive:
                    hits.append(r["name"])
            negative_items[item] = hits
        else:
            negative_items[item] = named(item, "negative")
            if item in positive:
                raise TSODataError(f"negative.sources: {item!r} is also a positive source")
            if item == config.base_model:
                warnings.append(
                    f"the base model {item!r} is in the negative pool: the paper (Table 4) reports "
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
                f"negative pool is empty: no cell of family {family!r} matches "
                f"{', '.join(config.negative_sources)} for base {config.base_model!r}; "
                f"list negatives explicitly or set mix.matrix = 0{off_axis}"
            )
    return ResolvedPools(
        base_model=config.base_model,
        base_family=family,
        positive=positive,
        negative=negative,
        membership=membership,
        warnings=warnings,
    )


def _key(row: dict[str, Any]) -> tuple[int, ...] | None:
    return version_key(row["version"], row["version_order"])


def _off_axis(members: list[dict[str, Any]]) -> str:
    """Why models of the family are not cells of the matrix (for an error message), or ''."""
    reasons = []
    for r in sorted(members, key=lambda r: r["name"]):
        if _key(r) is None:
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
