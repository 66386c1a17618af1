"""A run's identity and `--resume`, shared by `fit` and `sft` so the two cannot drift.

A run directory belongs to one set of settings. Every setting that changes the trained weights
goes into the run's **fingerprint**, which is written once, to ``OUT/run.json``, when the run
starts; a resume never rewrites that file. `--resume` compares the fingerprint of the new
command with the stored one and refuses any difference with one line naming the setting, its
old and its new value. All of it happens before any model is loaded:

* a run directory with a checkpoint needs `--resume`; `--resume` needs a checkpoint;
* the fingerprints agree;
* the newest checkpoint is whole (its manifest's file sizes, see tso_train.checkpoint);
* ``metrics.jsonl`` holds the rows of every step up to the checkpoint (a torn last line, left
  by a kill in the middle of a write, is cut).

Settings that do not change the result (``--save-every``, ``--out``, progress display,
``--gradient-checkpointing``, which recomputes the same activations) stay out of the fingerprint.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tso_train import checkpoint as ckpt
from tso_train.engine import build_ds_config, check_batch_sizes, rank, world_size
from tso_train.errors import TSOTrainError
from tso_train.files import atomic_write_text, file_digest
from tso_train.metrics import MetricsLog, check_resumable

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"

# fingerprint keys whose flag is not simply "--" + key with dashes
LABELS = {
    "snapshot": "SNAPSHOT (its snapshot id, or its content for a plain file)",
    "data": "DATA (its content)",
    "deepspeed_config": "--deepspeed-config (its content)",
    "world_size": "the number of ranks",
    "model": "--model",
}


def label(key: str) -> str:
    """How a fingerprint key is named to the user.

    >>> label("gamma_w"), label("world_size")
    ('--gamma-w', 'the number of ranks')
    """
    return LABELS.get(key, "--" + key.replace("_", "-"))


def _normal(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so a stored fingerprint compares equal."""
    return json.loads(json.dumps(value))


def fingerprint(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: _normal(v) for k, v in settings.items()}


# settings of the engine that change the result, shared by fit and sft (same attribute names)
ENGINE_KEYS = ("epochs", "global_batch", "micro_batch", "lr", "weight_decay", "adam_betas", "adam_eps", "warmup_ratio",
               "grad_clip", "max_length", "zero", "offload", "bf16", "seed")


def run_fingerprint(cfg: Any, inputs: dict[str, Any], packing: bool, world_size: int,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fingerprint of a fit or sft run: its inputs (the data's identity), the model, the
    engine settings, the resolved packing (it changes the summation order) and the number of
    ranks, plus the command's own settings (``extra``)."""
    return fingerprint({
        **inputs,
        "model": model_identity(cfg.model),
        **{k: getattr(cfg, k) for k in ENGINE_KEYS},
        "packing": packing,
        "deepspeed_config": content_identity(cfg.deepspeed_config),
        "world_size": world_size,
        **(extra or {}),
    })


def model_identity(model: str) -> str:
    """A local model directory by its absolute path (the same directory reached another way
    is the same model); a hub id as it is."""
    path = Path(model)
    return str(path.resolve()) if path.exists() else model


def content_identity(path: str | None) -> str | None:
    return None if path is None else file_digest(Path(path))


def mismatch(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The differences between two fingerprints as one line, or None.

    >>> mismatch({"lr": 1e-6, "beta": 0.1}, {"lr": 2e-6, "beta": 0.1})
    '--lr was 1e-06, now 2e-06'
    >>> mismatch({"lr": 1e-6}, {"lr": 1e-6}) is None
    True
    """
    diffs = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key, "unset"), new.get(key, "unset")
        if not _same(a, b):
            diffs.append(f"{label(key)} was {_show(a)}, now {_show(b)}")
    return "; ".join(diffs) or None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_show(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


@dataclass(frozen=True)
class Position:
    """Where a run's next optimiser step begins: the part and epoch (from 0), the step within
    the epoch (from 0), and the steps done so far. A checkpoint stores it (the manifest copies
    it), and a resumed run starts there."""

    part: int = 0
    epoch: int = 0
    step: int = 0
    global_step: int = 0

    @classmethod
    def of(cls, state: dict | None) -> Position:
        """The position of a checkpoint's client state; the start of a run without one."""
        return cls() if state is None else cls(**{k: state[k] for k in ckpt.POSITION_KEYS})

    def after_step(self, steps_per_epoch: int, epochs: int) -> Position:
        """The position after this step; past a part's last step, the start of the next part.

        >>> Position(0, 0, 1, 5).after_step(steps_per_epoch=2, epochs=2)
        Position(part=0, epoch=1, step=0, global_step=6)
        >>> Position(0, 1, 1, 7).after_step(steps_per_epoch=2, epochs=2)
        Position(part=1, epoch=0, step=0, global_step=8)
        """
        done = self.global_step + 1
        if self.step + 1 < steps_per_epoch:
            return Position(self.part, self.epoch, self.step + 1, done)
        if self.epoch + 1 < epochs:
            return Position(self.part, self.epoch + 1, 0, done)
        return Position(self.part + 1, 0, 0, done)

    def client_state(self, fingerprint_: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """What a checkpoint stores besides the engine's state: the run's fingerprint, this
        position and ``extra`` (the current part's reference log-probs for `fit`)."""
        return {"fingerprint": fingerprint_, **asdict(self), **extra}


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: the checkpoint's tag and loop position."""

    tag: str
    position: dict


def check_run(cfg: Any, out: Path, inputs: dict[str, Any],
              extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], ResumePoint | None]:
    """The checks `fit` and `sft` share once their data is read, before any model loads: batch
    sizes over the ranks, the DeepSpeed config (a ``--deepspeed-config`` is read and checked),
    then the run's fingerprint against ``out`` and `--resume`. Returns the fingerprint and the
    point a resume continues from (None: a fresh run). Reads only."""
    check_batch_sizes(cfg.global_batch, cfg.micro_batch, world_size())
    build_ds_config(cfg, cfg.global_batch)
    packing = cfg.speed.packing(cfg.packing, torch.cuda.is_available(), cfg.bf16)
    new_fingerprint = run_fingerprint(cfg, inputs, packing, world_size(), extra)
    return new_fingerprint, prepare_run(out, new_fingerprint, cfg.resume)


def prepare_run(out: Path, new_fingerprint: dict[str, Any], resume: bool) -> ResumePoint | None:
    """Everything `--resume` (or a fresh start) checks before a model is loaded; the point to
    resume from, or None for a fresh start. Reads only; raises TSOTrainError (one line)."""
    has_state = ckpt.has_engine_state(out)
    if resume and not has_state:
        raise TSOTrainError(f"--resume: no checkpoint under {out / ckpt.CHECKPOINT_DIR}")
    if not resume:
        if has_state:
            raise TSOTrainError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return None
    stored = read_fingerprint(out)
    diff = mismatch(stored, new_fingerprint)
    if diff:
        raise TSOTrainError(f"--resume: {out} was started with other settings: {diff} "
                            "(resume with the run's settings, or choose another --out)")
    state = ckpt.verify_engine_state(out)
    check_resumable(out / METRICS_FILE, state.position["global_step"])
    return ResumePoint(state.tag, state.position)


def read_fingerprint(out: Path) -> dict[str, Any]:
    path = out / RUN_FILE
    try:
        record = json.loads(path.read_text())
        stored = record["fingerprint"]
        if not isinstance(stored, dict):
            raise TypeError
    except FileNotFoundError:
        raise TSOTrainError(f"{path}: missing; cannot tell which settings the run started with") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise TSOTrainError(f"{path}: no readable 'fingerprint' (damaged, or written by an older tso-train); "
                            "cannot resume") from None
    return stored


def write_run_record(out: Path, fingerprint_: dict[str, Any], details: dict[str, Any]) -> None:
    """``OUT/run.json`` for a fresh start: the settings and counts of the run, and its
    fingerprint. Written once, atomically; `--resume` reads it and never rewrites it."""
    record = {**_normal(details), "fingerprint": fingerprint_}
    atomic_write_text(out / RUN_FILE, json.dumps(record, indent=2) + "\n")


def open_run(engine, out: Path, fingerprint_: dict[str, Any], resume_at: ResumePoint | None,
             details: dict[str, Any]) -> tuple[MetricsLog, dict | None]:
    """Once the engine has started: a fresh run gets an empty metrics log and its run.json
    (``details`` + fingerprint); a resume loads the checkpoint, whose client state it returns,
    and cuts the metrics rows past it. Every rank calls this."""
    out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(out / METRICS_FILE, enabled=rank() == 0)
    if resume_at is None:
        log.reset()
        if rank() == 0:
            write_run_record(out, fingerprint_, details)
        return log, None
    state = ckpt.load_engine_state(engine, out, resume_at.tag)
    if state.get("fingerprint") != fingerprint_:
        raise TSOTrainError(f"--resume: {out / ckpt.CHECKPOINT_DIR / resume_at.tag} belongs to another run than "
                            f"{out / RUN_FILE}; cannot resume")
    log.truncate_after(resume_at.position["global_step"])
    return log, state
