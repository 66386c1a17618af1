"""Range checks of every numeric setting of `fit` and `sft`, made before anything is loaded.

A bad value stops the run with one line naming the flag, its value and what it must be, so it
never reaches the model load, DeepSpeed or the first optimiser step (where `--lr nan` used to
surface as a 49-line traceback and `--epochs 0` as an untrained "final" model). The checks read
attributes by name, so the dataclasses of `fit` (FitConfig) and `sft` (SFTConfig) share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from tso_train.errors import TSOTrainError

SEED_LIMIT = 2**63  # numpy and torch generators take seeds below this


@dataclass(frozen=True)
class Rule:
    flag: str
    attribute: str
    ok: Callable[[float], bool]
    must: str  # what the value must be, completing "--flag V: must be ..."


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _positive(x) -> bool:
    return _finite(x) and x > 0


def _non_negative(x) -> bool:
    return _finite(x) and x >= 0


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def _non_negative_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


ENGINE_RULES = (
    Rule("--epochs", "epochs", _positive_int, "a whole number ≥ 1"),
    Rule("--global-batch", "global_batch", _positive_int, "a whole number ≥ 1"),
    Rule("--micro-batch", "micro_batch", _positive_int, "a whole number ≥ 1"),
    Rule("--lr", "lr", _positive, "a finite number > 0"),
    Rule("--weight-decay", "weight_decay", _non_negative, "a finite number ≥ 0"),
    Rule("--adam-eps", "adam_eps", _positive, "a finite number > 0"),
    Rule("--warmup-ratio", "warmup_ratio", lambda x: _finite(x) and 0 <= x <= 1, "between 0 and 1"),
    Rule("--grad-clip", "grad_clip", _non_negative, "a finite number ≥ 0 (0 turns clipping off)"),
    Rule("--zero", "zero", lambda x: x in (0, 1, 2, 3), "0, 1, 2 or 3"),
    Rule("--seed", "seed", lambda x: _non_negative_int(x) and x < SEED_LIMIT, "a whole number in [0, 2^63)"),
    Rule("--save-every", "save_every", _non_negative_int, "a whole number ≥ 0 (0: only at the end of a part)"),
)

FIT_RULES = (
    Rule("--beta", "beta", _positive, "a finite number > 0"),
    Rule("--gamma-w", "gamma_w", _non_negative, "a finite number ≥ 0"),
    Rule("--gamma-l", "gamma_l", _non_negative, "a finite number ≥ 0"),
    Rule("--ipo-tau", "ipo_tau", _positive, "a finite number > 0"),
    Rule("--cdpo-eps", "cdpo_eps", lambda x: _finite(x) and 0 <= x < 0.5, "in [0, 0.5) (a label-flip rate)"),
    Rule("--parts", "parts", _positive_int, "a whole number ≥ 1"),
)


def _check(cfg: object, rules: tuple[Rule, ...]) -> None:
    for rule in rules:
        value = getattr(cfg, rule.attribute)
        if not rule.ok(value):
            raise TSOTrainError(f"{rule.flag} {value}: must be {rule.must}")


def check_engine_settings(cfg: object) -> None:
    """The settings `fit` and `sft` share (optimiser, schedule, batches, engine)."""
    _check(cfg, ENGINE_RULES)
    betas = cfg.adam_betas
    if len(betas) != 2 or not all(_finite(b) and 0 <= b < 1 for b in betas):
        raise TSOTrainError(f"--adam-betas {','.join(str(b) for b in betas)}: must be two numbers in [0, 1), like 0.9,0.95")
    if cfg.max_length is not None and not _positive_int(cfg.max_length):
        raise TSOTrainError(f"--max-length {cfg.max_length}: must be a whole number ≥ 1, or 'none' for no limit")
    if cfg.offload and cfg.zero == 0:
        raise TSOTrainError("--offload needs --zero 1, 2 or 3")


def check_fit_settings(cfg: object) -> None:
    """Every numeric flag of `tso-train fit` (raises TSOTrainError naming the first bad one)."""
    if cfg.loss not in ("dual-clip", "dpo", "ipo", "cdpo"):
        raise TSOTrainError(f"--loss {cfg.loss}: choose dual-clip, dpo, ipo or cdpo")
    _check(cfg, FIT_RULES)
    check_engine_settings(cfg)
