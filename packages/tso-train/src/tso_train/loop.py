"""Mini-batch iterative DPO (DESIGN.md §1): the explicit training loop of `tso-train fit`.

1. Shuffle the encoded pairs with the seed and split them into T equal parts.
2. For each part: the reference becomes the current policy, so its log-probs for the part are
   computed ONCE by the policy (eval mode, dropout off, no grad) — no second model, no
   reference forward per step. The optimiser's warm-up + cosine-to-0 schedule restarts.
3. ``epochs`` passes over the part, reshuffled per epoch; each optimiser step sees one global
   batch, length-sorted into micro-batches dealt round-robin to the ranks.

Each epoch runs ⌊part / global batch⌋ full steps; the < global-batch leftover pairs of an epoch
sit it out (a different set each epoch, since every epoch reshuffles). A global batch larger
than a part is clamped to the part (rounded down to a multiple of micro-batch × ranks) with a
warning.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tso_train import checkpoint as ckpt
from tso_train.data import EncodedPair, batch_tokens, collate_pairs, encode_pairs, pad_id_of, split_global_batch
from tso_train.engine import (
    all_reduce_sum,
    build_ds_config,
    check_batch_sizes,
    check_model_reference,
    cosine_lr,
    grad_norm_after_step,
    grad_norm_before_step,
    engine_options,
    initialize,
    peak_memory_bytes,
    rank,
    release_freed_memory,
    set_lr,
    start_training_process,
    world_size,
)
from tso_train.errors import NonFiniteLossError, TSOTrainError
from tso_train.files import file_digest
from tso_train.logprobs import SequenceLogps
from tso_train.losses import PairLogps, make_loss
from tso_train.metrics import StepAccumulator
from tso_train.mlp import use_lean_mlp
from tso_train.packing import enable_packing, resolve_packing
from tso_train.progress import NullProgress
from tso_train.resume import ResumePoint, open_run, prepare_run, run_fingerprint
from tso_train.settings import check_fit_settings
from tso_train.snapshot import Snapshot, read_snapshot


@dataclass
class FitConfig:
    snapshot: str
    model: str
    out: str
    loss: str = "dual-clip"
    beta: float = 0.1
    gamma_w: float = 20.0
    gamma_l: float = 10.0
    ipo_tau: float = 0.2
    cdpo_eps: float = 0.3
    parts: int = 3
    epochs: int = 2
    global_batch: int = 256
    micro_batch: int = 4
    lr: float = 1e-6
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
    seed: int = 43
    deepspeed_config: str | None = None
    resume: bool = False
    save_every: int = 50
    length_average: bool = False
    score_user_turns: bool = False  # TRL's multi-turn convention: user turns inside chosen/rejected are scored too
    packing: bool | None = None  # padding-free micro-batches; None: on CPU only (resolve_packing)
    # set by tests / the benchmark: called after every optimiser step with the metrics row
    on_step: Callable[[dict], None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PartPlan:
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def split_parts(n_pairs: int, parts: int, seed: int) -> list[np.ndarray]:
    """Shuffle 0..n-1 with the seed and split into ``parts`` equal parts (sizes differ by ≤ 1).

    >>> [p.tolist() for p in split_parts(5, 2, 43)] == [p.tolist() for p in split_parts(5, 2, 43)]
    True
    >>> sorted(len(p) for p in split_parts(10, 3, 0))
    [3, 3, 4]
    """
    if parts < 1:
        raise TSOTrainError("--parts must be at least 1")
    if parts > n_pairs:
        raise TSOTrainError(f"--parts {parts} is more than the {n_pairs} usable pair(s)")
    order = np.random.default_rng(seed).permutation(n_pairs)
    return np.array_split(order, parts)


def plan_part(part_size: int, cfg: FitConfig, ranks: int, part: int) -> PartPlan:
    unit = cfg.micro_batch * ranks
    gb = cfg.global_batch
    if part_size == 0:
        raise TSOTrainError(f"part {part + 1} is empty")
    if gb > part_size:
        clamped = (part_size // unit) * unit
        if clamped == 0:
            raise TSOTrainError(
                f"part {part + 1} has {part_size} pair(s), fewer than --micro-batch × ranks = {unit}"
            )
        if rank() == 0:
            warnings.warn(
                f"--global-batch {gb} exceeds part {part + 1}'s {part_size} pairs; using {clamped}",
                stacklevel=2,
            )
        gb = clamped
    spe = part_size // gb
    total = spe * cfg.epochs
    return PartPlan(gb, spe, total, int(math.ceil(cfg.warmup_ratio * total)))


def replace_global_batch(plan: PartPlan, part_size: int, global_batch: int, cfg: FitConfig) -> PartPlan:
    if plan.global_batch == global_batch:
        return plan
    spe = part_size // global_batch
    return PartPlan(global_batch, spe, spe * cfg.epochs, int(math.ceil(cfg.warmup_ratio * spe * cfg.epochs)))


def epoch_order(part_indices: np.ndarray, seed: int, part: int, epoch: int) -> np.ndarray:
    return part_indices[np.random.default_rng([seed, part, epoch]).permutation(len(part_indices))]


def _device(engine) -> torch.device:
    return next(engine.module.parameters()).device


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


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
    device = _device(engine)
    engine.eval()
    try:
        for j in range(rk, len(batches), ws):
            idx = batches[j] or batches[0][:1]  # a padding batch: same work, result discarded
            sums, _ = engine(**_to(collate_pairs([pairs[i] for i in idx], pad_id, packed), device))
            if batches[j]:
                b = len(idx)
                ref[idx, 0] = sums[:b].double().cpu()
                ref[idx, 1] = sums[b:].double().cpu()
    finally:
        engine.train()
    return all_reduce_sum(ref)


# the loss parameters each loss reads (the others do not change its result)
LOSS_PARAMETERS = {"dual-clip": ("gamma_w", "gamma_l"), "dpo": (), "ipo": ("ipo_tau",), "cdpo": ("cdpo_eps",)}


def check_before_load(cfg: FitConfig, out: Path) -> tuple[Snapshot, dict, ResumePoint | None]:
    """Every check that needs no model: flags, the snapshot, batch sizes, the DeepSpeed config,
    the run directory and `--resume` (see tso_train.resume). Reads only."""
    check_fit_settings(cfg)
    check_model_reference(cfg.model)
    snapshot = read_snapshot(cfg.snapshot)  # schema and columns first, before any model load
    check_batch_sizes(cfg.global_batch, cfg.micro_batch, world_size())
    if cfg.parts > len(snapshot.pairs):
        raise TSOTrainError(f"--parts {cfg.parts} is more than the snapshot's {len(snapshot.pairs)} pair(s)")
    build_ds_config(engine_options(cfg, cfg.global_batch))  # reads and checks a --deepspeed-config
    extra = {"loss": cfg.loss, "beta": cfg.beta, **{k: getattr(cfg, k) for k in LOSS_PARAMETERS[cfg.loss]},
             "parts": cfg.parts, "length_average": cfg.length_average, "score_user_turns": cfg.score_user_turns}
    fingerprint = run_fingerprint(cfg, {"snapshot": snapshot.snapshot_id or file_digest(snapshot.path)},
                                  resolve_packing(cfg.packing, torch.cuda.is_available()), world_size(), extra)
    return snapshot, fingerprint, prepare_run(out, fingerprint, cfg.resume)


def fit(cfg: FitConfig, progress=None) -> dict:
    """Run the whole fit; returns a summary. ``progress``: an optional sink (tso_train.progress)."""
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    out = Path(cfg.out)
    snapshot, fingerprint, resume_at = check_before_load(cfg, out)
    lm, tokenizer = start_training_process(cfg)
    encoded = encode_pairs(tokenizer, snapshot.pairs, cfg.max_length, cfg.score_user_turns)
    pairs = encoded.pairs
    progress.note(f"{len(pairs)} pairs ({encoded.n_truncated} truncated to --max-length {cfg.max_length}, "
                  f"{encoded.n_dropped} dropped)")
    if encoded.n_dropped and rank() == 0:
        warnings.warn(f"dropped {encoded.n_dropped} pair(s) with no answer token left after truncation", stacklevel=2)
    parts = split_parts(len(pairs), cfg.parts, cfg.seed)
    plans = [plan_part(len(p), cfg, world_size(), i) for i, p in enumerate(parts)]
    loss_fn = make_loss(cfg.loss, beta=cfg.beta, gamma_w=cfg.gamma_w, gamma_l=cfg.gamma_l,
                        ipo_tau=cfg.ipo_tau, cdpo_eps=cfg.cdpo_eps)
    pad_id = pad_id_of(tokenizer)

    # A clamped global batch (tiny parts) is the same for every part: parts differ by at most one
    # pair, so take the smallest plan's batch and re-plan the others with it.
    gb0 = min(p.global_batch for p in plans)
    plans = [replace_global_batch(p, len(part), gb0, cfg) for p, part in zip(plans, parts)]
    packed = resolve_packing(cfg.packing, torch.cuda.is_available()) and enable_packing(lm)
    engine = initialize(SequenceLogps(lm, packed=packed), engine_options(cfg, gb0), weight_decay_module=lm)
    if engine.zero_optimization_stage() < 3:  # the stage a --deepspeed-config may have set
        use_lean_mlp(lm)
    gas = gb0 // (cfg.micro_batch * world_size())

    log, state = open_run(engine, out, fingerprint, resume_at, {
        **{k: v for k, v in asdict(cfg).items() if k not in ("on_step", "resume")},
        "n_pairs": len(pairs), "n_truncated": encoded.n_truncated, "n_dropped": encoded.n_dropped,
        "part_sizes": [len(p) for p in parts], "global_batch_used": gb0,
        "steps_per_part": [p.total_steps for p in plans], "world_size": world_size(),
        "snapshot_id": snapshot.snapshot_id,
    })
    start = {"part": 0, "epoch": 0, "step": 0, "global_step": 0, "ref": None}
    if state is not None:
        start = {k: state[k] for k in start}

    total_steps = sum(p.total_steps for p in plans)
    progress.start(total_steps, done=start["global_step"])
    global_step = start["global_step"]
    device = _device(engine)
    last_row: dict = {}
    train_seconds = 0.0  # reference passes + optimiser steps (not start-up, encoding or saving)
    for part in range(start["part"], cfg.parts):
        t_part = time.perf_counter()
        plan = plans[part]
        resuming_here = part == start["part"] and start["ref"] is not None
        if resuming_here:
            ref = torch.as_tensor(start["ref"], dtype=torch.float64)
        else:
            progress.phase(f"part {part + 1}/{cfg.parts}: reference log-probs of {len(parts[part])} pairs")
            ref = reference_logps(engine, pairs, parts[part], cfg.micro_batch, pad_id, len(pairs), packed)
            release_freed_memory()
        progress.phase(f"part {part + 1}/{cfg.parts}: training")
        first_epoch = start["epoch"] if part == start["part"] else 0
        for epoch in range(first_epoch, cfg.epochs):
            order = epoch_order(parts[part], cfg.seed, part, epoch)
            first_step = start["step"] if (part == start["part"] and epoch == start["epoch"]) else 0
            for step in range(first_step, plan.steps_per_epoch):
                part_step = epoch * plan.steps_per_epoch + step
                lr = cosine_lr(part_step, plan.total_steps, plan.warmup_steps, cfg.lr)
                set_lr(engine, lr)
                batch_idx = order[step * gb0 : (step + 1) * gb0].tolist()
                micro = split_global_batch(batch_idx, cfg.micro_batch, world_size(), rank(), balance_tokens=packed,
                                           key=(lambda i: pairs[i].n_tokens) if packed else (lambda i: pairs[i].length))
                assert len(micro) == gas
                acc = StepAccumulator()
                t0 = time.perf_counter()
                for m, idx in enumerate(micro):
                    batch = _to(collate_pairs([pairs[i] for i in idx], pad_id, packed), device)
                    sums, counts = engine(**batch)
                    b = len(idx)
                    r = ref[idx].to(device=sums.device, dtype=sums.dtype)
                    pc, pr, rc, rr = sums[:b], sums[b:], r[:, 0], r[:, 1]
                    if cfg.length_average:
                        cc, cr = counts[:b].clamp(min=1), counts[b:].clamp(min=1)
                        pc, pr, rc, rr = pc / cc, pr / cr, rc / cc, rr / cr
                    loss_out = loss_fn(PairLogps(pc, pr, rc, rr))
                    # engine.backward divides by the accumulation steps and ranks average
                    # gradients: the update is the mean over the global batch.
                    engine.backward(loss_out.losses.sum() / cfg.micro_batch)
                    release_freed_memory()
                    acc.add(loss_out, pc, pr, batch_tokens(batch))
                    if m < gas - 1:
                        engine.step()
                row, tokens = acc.reduce()
                if not math.isfinite(row["loss"]):
                    raise NonFiniteLossError(
                        f"non-finite loss ({row['loss']}) at part {part + 1}, step {global_step + 1}; "
                        f"stopped before the update; {ckpt.describe_saved_state(out)}"
                    )
                norm_before = grad_norm_before_step(engine)
                engine.step()
                elapsed = time.perf_counter() - t0
                global_step += 1
                grad_norm = grad_norm_after_step(engine, norm_before)
                peak = int(all_reduce_max_int(peak_memory_bytes()))
                row.update({
                    "lr": lr, "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "tokens_per_s": tokens / elapsed if elapsed > 0 else None, "peak_mem": peak,
                    "part": part + 1, "epoch": epoch + 1, "step": global_step,
                })
                log.write(row)
                last_row = row
                if cfg.on_step is not None:
                    cfg.on_step(row)
                progress.update(row)
                next_pos = _next_position(part, epoch, step, plan, cfg)
                if cfg.save_every and global_step % cfg.save_every == 0 and next_pos[0] == part:
                    ckpt.save_engine_state(engine, out, f"step-{global_step}", {
                        "fingerprint": fingerprint, "part": next_pos[0], "epoch": next_pos[1], "step": next_pos[2],
                        "global_step": global_step, "ref": ref,
                    })
        train_seconds += time.perf_counter() - t_part
        name = f"part-{part + 1}"
        ckpt.save_hf_policy(engine, lm, tokenizer, out, name, cfg.zero)
        ckpt.save_engine_state(engine, out, f"step-{global_step}", {
            "fingerprint": fingerprint, "part": part + 1, "epoch": 0, "step": 0,
            "global_step": global_step, "ref": None,
        })
        ckpt.point_final(out, name)
    progress.stop()
    return {"out": str(out), "steps": global_step, "last": last_row, "n_pairs": len(pairs), "train_seconds": train_seconds,
            "n_truncated": encoded.n_truncated, "n_dropped": encoded.n_dropped, "seconds": time.perf_counter() - t_start}


def _next_position(part: int, epoch: int, step: int, plan: PartPlan, cfg: FitConfig) -> tuple[int, int, int]:
    if step + 1 < plan.steps_per_epoch:
        return part, epoch, step + 1
    if epoch + 1 < cfg.epochs:
        return part, epoch + 1, 0
    return part + 1, 0, 0


def all_reduce_max_int(value: int) -> int:
    from tso_train.engine import all_reduce_max

    return int(all_reduce_max(torch.tensor([value], dtype=torch.float64))[0])
