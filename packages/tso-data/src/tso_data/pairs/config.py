"""The round configuration of `tso-data build`: ``<catalog>/round.toml``, overridden per
round by a ``[round.R]`` table in the same file, overridden by command-line flags.

Every key, its default and its meaning are listed in :data:`DEFAULTS` and in docs/build.md
("round.toml reference"). Unknown keys are errors, never silently ignored. What the pool
rules mean is :mod:`tso_data.pairs.pools`; τ's modes, :mod:`tso_data.pairs.tau`.
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tso_data.errors import TSODataError
from tso_data.ids import canonical_json
from tso_data.pairs.pools import HUMAN, NEGATIVE_RULES, NEWEST_LARGEST, OLDER_OR_SMALLER, POSITIVE_RULES
from tso_data.pairs.tau import TAU_MODES
from tso_data.scoring import check_weights

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


def _fail(where: str, fieldname: str, msg: str) -> TSODataError:
    return TSODataError(f"{where}: field '{fieldname}': {msg}")


def _validate(c: dict[str, Any], round_: int, where: str) -> RoundConfig:
    def fail(fieldname: str, msg: str) -> TSODataError:
        return _fail(where, fieldname, msg)

    if round_ < 1:
        raise TSODataError(f"--round must be >= 1, got {round_}")
    if not c["base_model"] or not isinstance(c["base_model"], str):
        raise fail("base_model",
                   "required (the round's base model, a models.name); set it in round.toml or pass --base-model")
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
    _check_pools(c, where)
    tau_mode, tau_value = _check_tau(c["tau"], where)
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


def _check_pools(c: dict[str, Any], where: str) -> None:
    """positive/negative: lists of names or rules, each rule in its own pool; weights numbers."""
    for name in ("positive", "negative"):
        sources = c[name]["sources"]
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise _fail(where, f"{name}.sources", "expected a list of source names or rules")
        weights = {str(k): _number(v, f"{name}.weights.{k}", where) for k, v in c[name]["weights"].items()}
        check_weights(weights, f"{where}: {name}.weights")
        c[name]["weights"] = weights
    for rule in c["positive"]["sources"]:
        if rule in NEGATIVE_RULES:
            raise _fail(where, "positive.sources", f"{rule!r} is a negative-pool rule")
    for rule in c["negative"]["sources"]:
        if rule in POSITIVE_RULES:
            raise _fail(where, "negative.sources", f"{rule!r} is a positive-pool rule")


def _check_tau(tau: dict[str, Any], where: str) -> tuple[str, float | None]:
    mode, value = tau["mode"], tau["value"]
    if mode not in TAU_MODES:
        raise _fail(where, "tau.mode", f"expected one of {', '.join(TAU_MODES)}, got {mode!r}")
    if value is not None:
        value = _number(value, "tau.value", where)
        if not math.isfinite(value):
            raise _fail(where, "tau.value", f"τ must be a finite number (a score on the judge's scale), got {value!r}")
    if mode == "fixed" and value is None:
        raise _fail(where, "tau.value", 'tau.mode = "fixed" needs a value (or --tau)')
    return mode, value


def _number(value: Any, fieldname: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TSODataError(f"{where}: field '{fieldname}': expected a number, got {value!r}")
    return float(value)
