"""The settings of a run: the config dataclasses of `fit` and `sft`, and their checks.

The dataclasses hold the only copy of every default — the paper's values for `fit` (TSO,
Appendix C.2; docs/design.md, 1. The method) — and the CLI builds its options from them
(tso_train.cli). Every numeric setting is range-checked before anything is loaded: a bad value
stops the run with one line naming the flag, its value and what it must be, so it never reaches
the model load, DeepSpeed or the first optimiser step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from tso_train.errors import TSOTrainError
from tso_train.speed import SpeedSwitches

# the preference losses (tso_train.losses) and the FitConfig fields each one reads besides β
LOSS_PARAMETERS: dict[str, tuple[str, ...]] = {
    "dual-clip": ("gamma_w", "gamma_l"),
    "dpo": (),
    "ipo": ("ipo_tau",),
    "cdpo": ("cdpo_eps",),
}
LOSS_NAMES = tuple(LOSS_PARAMETERS)

SEED_LIMIT = 2**63  # numpy and torch generators take seeds below this


def flag(name: str) -> str:
    """The command-line flag of a settings field.

    >>> flag("gamma_w")
    '--gamma-w'
    """
    return "--" + name.replace("_", "-")


@dataclass(kw_only=True)
class EngineSettings:
    """What `fit` and `sft` share: the model and run directory, the optimiser and its schedule,
    batching, and DeepSpeed. ``epochs``, ``global_batch`` and ``lr`` take each command's own default."""

    model: str
    out: str
    epochs: int
    global_batch: int
    micro_batch: int = 4
    lr: float
    weight_decay: float = 0.05
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    max_length: int | None = 1024
    zero: int = 0
    offload: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    packing: bool | None = None  # padding-free micro-batches; None: the device's default (SpeedSwitches.packing)
    seed: int = 43
    deepspeed_config: str | None = None
    save_every: int = 50
    resume: bool = False
    # the performance switches (tso_train.speed); the CLI passes SpeedSwitches.from_environment()
    speed: SpeedSwitches = field(default_factory=SpeedSwitches, repr=False)
    # called after every optimiser step with the metrics row (tests, benchmarks)
    on_step: Callable[[dict], None] | None = field(default=None, repr=False)


@dataclass(kw_only=True)
class FitConfig(EngineSettings):
    """`tso-train fit`: mini-batch-iterative preference optimisation on a pair snapshot."""

    snapshot: str
    loss: str = "dual-clip"
    beta: float = 0.1
    gamma_w: float = 20.0
    gamma_l: float = 10.0
    ipo_tau: float = 0.2
    cdpo_eps: float = 0.3
    parts: int = 3
    epochs: int = 2
    global_batch: int = 256
    lr: float = 1e-6
    length_average: bool = False
    score_user_turns: bool = False  # TRL's multi-turn convention: user turns inside chosen/rejected are scored too


@dataclass(kw_only=True)
class SFTConfig(EngineSettings):
    """`tso-train sft`: supervised fine-tuning on conversations."""

    data: str
    epochs: int = 1
    global_batch: int = 32
    lr: float = 1e-5


# fields that are no setting of the run itself: a command's wiring, not a flag
NOT_FLAGS = ("speed", "on_step")


def defaults(config: type) -> dict[str, Any]:
    """Each field's default (fields without one are left out).

    >>> defaults(FitConfig)["beta"], defaults(SFTConfig)["lr"], "model" in defaults(FitConfig)
    (0.1, 1e-05, False)
    """
    out = {}
    for f in fields(config):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def run_details(cfg: EngineSettings) -> dict[str, Any]:
    """The settings recorded in run.json (flags only)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in (*NOT_FLAGS, "resume")}


@dataclass(frozen=True)
class Rule:
    attribute: str
    ok: Callable[[Any], bool]
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
    Rule("epochs", _positive_int, "a whole number ≥ 1"),
    Rule("global_batch", _positive_int, "a whole number ≥ 1"),
    Rule("micro_batch", _positive_int, "a whole number ≥ 1"),
    Rule("lr", _positive, "a finite number > 0"),
    Rule("weight_decay", _non_negative, "a finite number ≥ 0"),
    Rule("adam_eps", _positive, "a finite number > 0"),
    Rule("warmup_ratio", lambda x: _finite(x) and 0 <= x <= 1, "between 0 and 1"),
    Rule("grad_clip", _non_negative, "a finite number ≥ 0 (0 turns clipping off)"),
    Rule("zero", lambda x: x in (0, 1, 2, 3), "0, 1, 2 or 3"),
    Rule("seed", lambda x: _non_negative_int(x) and x < SEED_LIMIT, "a whole number in [0, 2^63)"),
    Rule("save_every", _non_negative_int, "a whole number ≥ 0 (0: only at the end of a part)"),
)

FIT_RULES = (
    Rule("beta", _positive, "a finite number > 0"),
    Rule("gamma_w", _non_negative, "a finite number ≥ 0"),
    Rule("gamma_l", _non_negative, "a finite number ≥ 0"),
    Rule("ipo_tau", _positive, "a finite number > 0"),
    Rule("cdpo_eps", lambda x: _finite(x) and 0 <= x < 0.5, "in [0, 0.5) (a label-flip rate)"),
    Rule("parts", _positive_int, "a whole number ≥ 1"),
)


def _check(cfg: object, rules: tuple[Rule, ...]) -> None:
    for rule in rules:
        value = getattr(cfg, rule.attribute)
        if not rule.ok(value):
            raise TSOTrainError(f"{flag(rule.attribute)} {value}: must be {rule.must}")


def check_engine_settings(cfg: EngineSettings) -> None:
    """The settings `fit` and `sft` share (optimiser, schedule, batches, engine)."""
    _check(cfg, ENGINE_RULES)
    betas = cfg.adam_betas
    if len(betas) != 2 or not all(_finite(b) and 0 <= b < 1 for b in betas):
        raise TSOTrainError(f"--adam-betas {','.join(str(b) for b in betas)}: "
                            "must be two numbers in [0, 1), like 0.9,0.95")
    if cfg.max_length is not None and not _positive_int(cfg.max_length):
        raise TSOTrainError(f"--max-length {cfg.max_length}: must be a whole number ≥ 1, or 'none' for no limit")
    if cfg.offload and cfg.zero == 0:
        raise TSOTrainError("--offload needs --zero 1, 2 or 3")


def check_fit_settings(cfg: FitConfig) -> None:
    """Every numeric flag of `tso-train fit` (raises TSOTrainError naming the first bad one)."""
    if cfg.loss not in LOSS_NAMES:
        raise TSOTrainError(f"--loss {cfg.loss}: choose {', '.join(LOSS_NAMES[:-1])} or {LOSS_NAMES[-1]}")
    _check(cfg, FIT_RULES)
    check_engine_settings(cfg)
