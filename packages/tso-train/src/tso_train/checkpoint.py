"""Checkpoints: HF `save_pretrained` policies per part, resumable DeepSpeed states every K steps.

Layout of a run directory::

    OUT/part-1/ … part-T/   the policy after each part (transformers / vLLM loadable)
    OUT/final -> part-T     the trained policy
    OUT/checkpoints/        DeepSpeed engine states (model, optimiser, loop position and the
                            current part's reference log-probs); only the newest is kept.
                            Each state's MANIFEST (file sizes, loop position) is written after
                            its files, and ``latest`` moves to it after that, so `--resume`
                            can check a state before any model is loaded.
    OUT/metrics.jsonl       one row per optimiser step
    OUT/run.json            the run's settings
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tso_train.engine import barrier, rank
from tso_train.errors import TSOTrainError
from tso_train.files import atomic_write_text

CHECKPOINT_DIR = "checkpoints"
MANIFEST = "tso-checkpoint.json"


def save_hf_policy(engine, lm, tokenizer, out_dir: Path, name: str, zero_stage: int) -> Path:
    """Write the policy with `save_pretrained` atomically (temp dir, then rename)."""
    final = out_dir / name
    state_dict = None
    if zero_stage == 3:  # parameters are partitioned: gather them (every rank must call this)
        state_dict = engine._zero3_consolidated_16bit_state_dict()
        state_dict = {k.removeprefix("lm."): v for k, v in state_dict.items()}
    if rank() == 0:
        tmp = out_dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        lm.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    barrier()
    return final


def point_final(out_dir: Path, name: str) -> None:
    if rank() != 0:
        return
    link = out_dir / "final"
    tmp = out_dir / ".final.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(name)
    os.replace(tmp, link)


def save_engine_state(engine, out_dir: Path, tag: str, client_state: dict) -> None:
    """Every rank calls this. The new state is complete (files, then its manifest) before
    `latest` moves to it; then older states are removed, so a kill at any moment leaves a
    loadable checkpoint. ``client_state`` holds the loop position (``part``, ``epoch``,
    ``step``, ``global_step``), copied into the manifest."""
    ckpt = out_dir / CHECKPOINT_DIR
    engine.save_checkpoint(str(ckpt), tag=tag, client_state=client_state, save_latest=False)
    barrier()
    if rank() == 0:
        files = {str(f.relative_to(ckpt / tag)): f.stat().st_size
                 for f in sorted((ckpt / tag).rglob("*")) if f.is_file()}
        position = {k: client_state[k] for k in POSITION_KEYS if k in client_state}
        atomic_write_text(ckpt / tag / MANIFEST, json.dumps({"files": files, "position": position}, indent=1))
        atomic_write_text(ckpt / "latest", tag)
        for old in ckpt.iterdir():
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
    barrier()


POSITION_KEYS = ("part", "epoch", "step", "global_step")


@dataclass(frozen=True)
class SavedState:
    """The newest engine state of a run, as its manifest describes it."""

    tag: str
    position: dict


def has_engine_state(out_dir: Path) -> bool:
    return (out_dir / CHECKPOINT_DIR / "latest").is_file()


def verify_engine_state(out_dir: Path) -> SavedState:
    """Check the newest state before anything is loaded: `latest` names a directory whose
    manifest lists every file at its written size. A truncated or missing file is one line."""
    ckpt = out_dir / CHECKPOINT_DIR
    tag = (ckpt / "latest").read_text().strip()
    where = ckpt / tag
    if not tag or "/" in tag or not where.is_dir():
        raise TSOTrainError(f"{ckpt / 'latest'}: names {tag!r}, which is not a checkpoint directory; cannot resume")
    try:
        manifest = json.loads((where / MANIFEST).read_text())
        files, position = dict(manifest["files"]), dict(manifest["position"])
    except (OSError, ValueError, KeyError, TypeError):
        raise TSOTrainError(f"{where / MANIFEST}: missing or unreadable (an incomplete checkpoint, or one written "
                            "by an older tso-train); cannot resume") from None
    for name, size in files.items():
        f = where / name
        actual = f.stat().st_size if f.is_file() else None
        if actual != size:
            state = "missing" if actual is None else f"{actual} bytes, written as {size}"
            raise TSOTrainError(f"{f}: truncated or changed checkpoint file ({state}); cannot resume")
    if sorted(position) != sorted(POSITION_KEYS):
        raise TSOTrainError(f"{where / MANIFEST}: no loop position; cannot resume")
    return SavedState(tag, position)


def describe_saved_state(out_dir: Path) -> str:
    """For an error that stops a run: what a `--resume` would continue from."""
    if not has_engine_state(out_dir):
        return "no checkpoint was written yet, so a rerun starts over"
    tag = (out_dir / CHECKPOINT_DIR / "latest").read_text().strip()
    return f"the last checkpoint ({out_dir / CHECKPOINT_DIR / tag}) is intact (--resume continues from it)"


def load_engine_state(engine, out_dir: Path, tag: str) -> dict:
    """Load the state ``tag`` (checked by :func:`verify_engine_state`); its client state."""
    try:
        path, client_state = engine.load_checkpoint(str(out_dir / CHECKPOINT_DIR), tag=tag)
    except Exception as exc:  # noqa: BLE001 - torch/DeepSpeed raise many kinds for a damaged file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TSOTrainError(f"{out_dir / CHECKPOINT_DIR / tag}: cannot load the checkpoint ({first})") from None
    if path is None:
        raise TSOTrainError(f"{out_dir / CHECKPOINT_DIR / tag}: DeepSpeed could not load the checkpoint")
    return client_state or {}
