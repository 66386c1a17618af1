"""Checkpoints: HF `save_pretrained` policies per part, resumable DeepSpeed states every K steps.

Layout of a run directory::

    OUT/part-1/ … part-T/   the policy after each part (transformers / vLLM loadable)
    OUT/final -> part-T     the trained policy
    OUT/checkpoints/        DeepSpeed engine states (model, optimiser, loop position and the
                            current part's reference log-probs); only the newest is kept
    OUT/metrics.jsonl       one row per optimiser step
    OUT/run.json            the run's settings
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from tso_train.engine import barrier, rank

CHECKPOINT_DIR = "checkpoints"


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
    """Every rank calls this. The new state is complete before `latest` moves to it; then
    older states are removed, so a kill at any moment leaves a loadable checkpoint."""
    ckpt = out_dir / CHECKPOINT_DIR
    engine.save_checkpoint(str(ckpt), tag=tag, client_state=client_state)
    barrier()
    if rank() == 0:
        for old in ckpt.iterdir():
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
    barrier()


def has_engine_state(out_dir: Path) -> bool:
    return (out_dir / CHECKPOINT_DIR / "latest").is_file()


def load_engine_state(engine, out_dir: Path) -> dict:
    _, client_state = engine.load_checkpoint(str(out_dir / CHECKPOINT_DIR))
    return client_state or {}


def as_tensor(x) -> torch.Tensor | None:
    return None if x is None else torch.as_tensor(x)
