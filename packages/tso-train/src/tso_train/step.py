"""One optimiser step over a global batch: the unit `fit` and `sft` share.

The global batch is cut into this rank's micro-batches (tso_train.data.split_global_batch). Each
micro-batch goes forward through the engine, which returns per-sequence summed log-probs; the
objective (tso_train.objectives) turns them into the loss to backpropagate and records the
metrics. Gradients accumulate over the micro-batches — DeepSpeed counts them and updates only at
the last — and the update happens only after the loss over the whole global batch is known to be
finite.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from tso_train.data import batch_tokens
from tso_train.engine import grad_norm_after_step, grad_norm_before_step, max_over_ranks, peak_memory_bytes, set_lr
from tso_train.errors import NonFiniteLossError
from tso_train.objectives import Objective


def optimizer_step(engine, objective: Objective, micro_batches: list[list[int]], lr: float,
                   release_memory: Callable[[], None]) -> dict:
    """Train on one global batch at learning rate ``lr``; returns its metrics row (all ranks):
    the objective's metrics, ``lr``, ``grad_norm`` (before clipping), ``tokens_per_s`` and
    ``peak_mem``. ``release_memory`` runs after each backward pass (tso_train.speed.heap_trimmer).
    Raises NonFiniteLossError, before the update, when the loss is NaN or infinite."""
    assert len(micro_batches) == engine.gradient_accumulation_steps()
    set_lr(engine, lr)
    device = engine_device(engine)
    objective.begin_step(micro_batches)
    started = time.perf_counter()
    for m, items in enumerate(micro_batches):
        batch = to_device(objective.collate(items), device)
        sums, counts = engine(**batch)
        engine.backward(objective.loss(items, sums, counts, batch_tokens(batch)))
        release_memory()  # the micro-batch's activations were just freed
        if m < len(micro_batches) - 1:
            engine.step()  # DeepSpeed counts micro-batches; it updates at the last one only
    metrics, tokens = objective.end_step()
    if not math.isfinite(metrics["loss"]):
        raise NonFiniteLossError(f"non-finite loss ({metrics['loss']})")
    norm_before = grad_norm_before_step(engine)
    engine.step()
    elapsed = time.perf_counter() - started
    grad_norm = grad_norm_after_step(engine, norm_before)
    return {
        **metrics, "lr": lr, "grad_norm": grad_norm,
        "tokens_per_s": tokens / elapsed if elapsed > 0 else None,
        "peak_mem": max_over_ranks(peak_memory_bytes()),
    }


def engine_device(engine) -> torch.device:
    return next(engine.module.parameters()).device


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
