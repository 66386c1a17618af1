"""`tso-train fit`: mini-batch iterative DPO (docs/design.md, 1. The method), as an explicit loop.

1. **Plan.** Shuffle the encoded pairs with the seed and split them into T equal parts
   (tso_train.schedule).
2. **Reference pass.** For each part, the reference becomes the current policy, so the part's
   reference log-probs are computed ONCE by the policy (eval mode, dropout off, no grad): no
   second model, no reference forward per step.
3. **Epochs of steps.** ``epochs`` passes over the part, reshuffled per epoch, with a learning
   rate that warms up and decays to 0 within the part; each optimiser step sees one global
   batch (tso_train.trainer, tso_train.step).
4. **Checkpoint.** The policy after the part (``OUT/part-K``, ``OUT/final``) and a resumable
   engine state at the start of the next part.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from tso_train import checkpoint as ckpt
from tso_train.data import EncodedPair, EncodedPairs, collate_pairs, encode_pairs, pad_id_of
from tso_train.engine import (
    all_reduce_sum,
    check_model_reference,
    rank,
    start_training_process,
    world_size,
)
from tso_train.errors import TSOTrainError
from tso_train.files import file_digest
from tso_train.losses import PreferenceLoss, make_loss
from tso_train.objectives import PreferenceObjective
from tso_train.progress import NullProgress
from tso_train.resume import ResumePoint, check_run
from tso_train.schedule import plan_parts, split_parts
from tso_train.settings import LOSS_PARAMETERS, FitConfig, check_fit_settings, run_details
from tso_train.snapshot import Snapshot, read_snapshot
from tso_train.step import engine_device, to_device
from tso_train.trainer import Trainer

__all__ = ["FitConfig", "check_before_load", "fit"]


def fit(cfg: FitConfig, progress=None) -> dict:
    """Run `tso-train fit`; returns a summary. ``progress``: an optional sink (tso_train.progress)."""
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    snapshot, fingerprint, resume_at = check_before_load(cfg, Path(cfg.out))
    lm, tokenizer = start_training_process(cfg)
    encoded = _encode(tokenizer, snapshot, cfg, progress)
    pairs, pad_id = encoded.pairs, pad_id_of(tokenizer)

    parts = split_parts(len(pairs), cfg.parts, cfg.seed)
    plans = plan_parts([len(p) for p in parts], cfg.global_batch, cfg.micro_batch, world_size(), cfg.epochs,
                       cfg.warmup_ratio, warn=rank() == 0)
    details = {**run_details(cfg), "n_pairs": len(pairs), "n_truncated": encoded.n_truncated,
               "n_dropped": encoded.n_dropped, "part_sizes": [len(p) for p in parts],
               "global_batch_used": plans[0].global_batch, "steps_per_part": [p.total_steps for p in plans],
               "world_size": world_size(), "snapshot_id": snapshot.snapshot_id}
    trainer = Trainer.start(cfg, lm, fingerprint, resume_at, plans[0].global_batch, details, progress)
    loss_fn = loss_of(cfg)
    progress.start(sum(p.total_steps for p in plans), done=trainer.position.global_step)

    train_seconds = 0.0  # reference passes + optimiser steps (not start-up, encoding or saving)
    for part in range(trainer.position.part, cfg.parts):
        t_part = time.perf_counter()
        reference = part_reference(trainer, pairs, parts[part], part, pad_id, progress)
        progress.phase(f"part {part + 1}/{cfg.parts}: training")
        objective = PreferenceObjective(pairs, pad_id, trainer.packed, reference, loss_fn, cfg.micro_batch,
                                        cfg.length_average)
        trainer.run_part(plans[part], parts[part], objective, part)
        train_seconds += time.perf_counter() - t_part
        save_part(trainer, lm, tokenizer, part)
    progress.stop()
    return {"out": str(trainer.out), "steps": trainer.position.global_step, "last": trainer.last_row,
            "n_pairs": len(pairs), "train_seconds": train_seconds, "n_truncated": encoded.n_truncated,
            "n_dropped": encoded.n_dropped, "seconds": time.perf_counter() - t_start}


def check_before_load(cfg: FitConfig, out: Path) -> tuple[Snapshot, dict, ResumePoint | None]:
    """Every check that needs no model: flags, the snapshot, then what `sft` checks too (batch
    sizes, the DeepSpeed config, the run directory and `--resume`: tso_train.resume.check_run)."""
    check_fit_settings(cfg)
    check_model_reference(cfg.model)
    snapshot = read_snapshot(cfg.snapshot)  # schema and columns first, before any model load
    if cfg.parts > len(snapshot.pairs):
        raise TSOTrainError(f"--parts {cfg.parts} is more than the snapshot's {len(snapshot.pairs)} pair(s)")
    extra = {"loss": cfg.loss, "beta": cfg.beta, **{k: getattr(cfg, k) for k in LOSS_PARAMETERS[cfg.loss]},
             "parts": cfg.parts, "length_average": cfg.length_average, "score_user_turns": cfg.score_user_turns}
    fingerprint, resume_at = check_run(cfg, out, {"snapshot": snapshot.snapshot_id or file_digest(snapshot.path)},
                                       extra)
    return snapshot, fingerprint, resume_at


def loss_of(cfg: FitConfig) -> PreferenceLoss:
    return make_loss(cfg.loss, beta=cfg.beta, gamma_w=cfg.gamma_w, gamma_l=cfg.gamma_l, ipo_tau=cfg.ipo_tau,
                     cdpo_eps=cfg.cdpo_eps)


def _encode(tokenizer, snapshot: Snapshot, cfg: FitConfig, progress) -> EncodedPairs:
    encoded = encode_pairs(tokenizer, snapshot.pairs, cfg.max_length, cfg.score_user_turns)
    progress.note(f"{len(encoded.pairs)} pairs ({encoded.n_truncated} truncated to --max-length {cfg.max_length}, "
                  f"{encoded.n_dropped} dropped)")
    if encoded.n_dropped and rank() == 0:
        warnings.warn(f"dropped {encoded.n_dropped} pair(s) with no answer token left after truncation", stacklevel=3)
    return encoded


def part_reference(trainer: Trainer, pairs: list[EncodedPair], items: np.ndarray, part: int, pad_id: int,
                   progress) -> torch.Tensor:
    """The reference log-probs of ``part``: the ones its checkpoint kept when a resume continues
    in the middle of it, else a reference pass under the current policy."""
    kept = trainer.resumed.get("ref") if part == trainer.resumed.get("part") else None
    if kept is not None:
        return torch.as_tensor(kept, dtype=torch.float64)
    progress.phase(f"part {part + 1}/{trainer.cfg.parts}: reference log-probs of {len(items)} pairs")
    return reference_pass(trainer, pairs, items, pad_id)


def reference_pass(trainer: Trainer, pairs: list[EncodedPair], part: np.ndarray, pad_id: int) -> torch.Tensor:
    """The part's reference log-probs under the current policy, [n pairs, 2] (chosen, rejected;
    rows of other parts stay 0)."""
    reference = reference_logps(trainer.engine, pairs, part, trainer.cfg.micro_batch, pad_id, len(pairs),
                                trainer.packed)
    trainer.release_memory()
    return reference


@torch.no_grad()
def reference_logps(engine, pairs: list[EncodedPair], indices: np.ndarray, batch_size: int, pad_id: int, n_total: int,
                    packed: bool = False) -> torch.Tensor:
    """Summed log-probs [n_total, 2] (chosen, rejected) of the part's pairs under the current
    policy. Work is dealt across ranks and summed; every rank runs the same number of forwards
    (ZeRO-3 gathers parameters collectively)."""
    ref = torch.zeros(n_total, 2, dtype=torch.float64)
    ordered = sorted(indices.tolist(), key=lambda i: pairs[i].length)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    ws, rk = world_size(), rank()
    while len(batches) % ws:
        batches.append([])
    device = engine_device(engine)
    engine.eval()
    try:
        for j in range(rk, len(batches), ws):
            idx = batches[j] or batches[0][:1]  # a padding batch: same work, result discarded
            sums, _ = engine(**to_device(collate_pairs([pairs[i] for i in idx], pad_id, packed), device))
            if batches[j]:
                b = len(idx)
                ref[idx, 0] = sums[:b].double().cpu()
                ref[idx, 1] = sums[b:].double().cpu()
    finally:
        engine.train()
    return all_reduce_sum(ref)


def save_part(trainer: Trainer, lm, tokenizer, part: int) -> None:
    """What a part's end leaves: the policy (``OUT/part-K``, then ``OUT/final`` points to it) and
    an engine checkpoint at the start of the next part (no reference log-probs to keep)."""
    name = f"part-{part + 1}"
    ckpt.save_hf_policy(trainer.engine, lm, tokenizer, trainer.out, name, trainer.cfg.zero)
    trainer.save_position(ref=None)
    ckpt.point_final(trainer.out, name)
