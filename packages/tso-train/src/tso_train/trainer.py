"""What `fit` and `sft` share once the model is loaded: the engine with the command's speed
switches, the run's metrics log and position, and the loop over one part's epochs of steps.

A part runs ``epochs`` passes over its items, reshuffled per epoch (tso_train.schedule); each
global batch is one optimiser step (tso_train.step), whose metrics row is written to
``metrics.jsonl``; every ``--save-every`` steps a resumable engine checkpoint stores the next
position (tso_train.resume). `fit` runs one part per reference reset, `sft` a single part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tso_train import checkpoint as ckpt
from tso_train.data import split_global_batch
from tso_train.engine import initialize, rank, world_size
from tso_train.errors import NonFiniteLossError
from tso_train.logprobs import SequenceLogps
from tso_train.metrics import MetricsLog
from tso_train.objectives import Objective
from tso_train.packing import enable_packing
from tso_train.resume import Position, ResumePoint, open_run
from tso_train.schedule import PartPlan, cosine_lr, epoch_order
from tso_train.settings import EngineSettings
from tso_train.speed import apply_model_switches, heap_trimmer, packed_attention_kernel
from tso_train.step import optimizer_step


@dataclass
class Trainer:
    """A started run: its engine, log and position. Made by :meth:`start`; `fit` and `sft` call
    :meth:`run_part` for each part and save what a part's end leaves behind themselves."""

    cfg: EngineSettings
    engine: Any  # deepspeed.DeepSpeedEngine around a tso_train.logprobs.SequenceLogps
    out: Path
    fingerprint: dict
    log: MetricsLog
    progress: Any  # a tso_train.progress sink
    packed: bool  # micro-batches are packed rows (tso_train.packing)
    release_memory: Callable[[], None]  # after each backward and reference pass (tso_train.speed)
    position: Position  # where the next step begins
    resumed: dict = field(default_factory=dict)  # the client state of the checkpoint a resume continues
    last_row: dict = field(default_factory=dict)

    @classmethod
    def start(cls, cfg: EngineSettings, lm: torch.nn.Module, fingerprint: dict, resume_at: ResumePoint | None,
              global_batch: int, details: dict, progress) -> Trainer:
        """Start DeepSpeed on the model with ``cfg.speed``'s switches, then open the run: a fresh
        run.json (``details`` + fingerprint), or the checkpoint a resume continues from."""
        on_cuda = torch.cuda.is_available()
        packed = cfg.speed.packing(cfg.packing, on_cuda, cfg.bf16) and enable_packing(lm)
        module = SequenceLogps(lm, packed=packed, fused_head=cfg.speed.fused_lm_head,
                               attention_kernel=packed_attention_kernel(cfg.speed, on_cuda))
        engine = initialize(module, cfg, global_batch, weight_decay_module=lm)
        apply_model_switches(lm, cfg.speed, engine.zero_optimization_stage())
        out = Path(cfg.out)
        log, state = open_run(engine, out, fingerprint, resume_at, details)
        return cls(cfg, engine, out, fingerprint, log, progress, packed, heap_trimmer(cfg.speed, on_cuda),
                   Position.of(state), resumed=state or {})

    def run_part(self, plan: PartPlan, items: np.ndarray, objective: Objective, part: int | None) -> None:
        """``cfg.epochs`` passes over ``items`` from the current position, one optimiser step
        per global batch. ``part``: the part's index for `fit` (its rows say which), None for a
        run without parts."""
        seed_key = (self.cfg.seed,) if part is None else (self.cfg.seed, part)
        start = self.position
        for epoch in range(start.epoch, self.cfg.epochs):
            order = epoch_order(items, seed_key, epoch)
            for step in range(start.step if epoch == start.epoch else 0, plan.steps_per_epoch):
                lr = cosine_lr(epoch * plan.steps_per_epoch + step, plan.total_steps, plan.warmup_steps, self.cfg.lr)
                batch = order[step * plan.global_batch : (step + 1) * plan.global_batch].tolist()
                row = self._step(batch, objective, lr, part)
                self.position = self.position.after_step(plan.steps_per_epoch, self.cfg.epochs)
                labels = {} if part is None else {"part": part + 1}
                self._record({**row, **labels, "epoch": epoch + 1, "step": self.position.global_step})
                if self._checkpoint_due(part):
                    self.save_position(**objective.checkpoint_state())

    def _step(self, batch: list[int], objective: Objective, lr: float, part: int | None) -> dict:
        micro = split_global_batch(batch, self.cfg.micro_batch, world_size(), rank(), key=objective.size,
                                   balance_tokens=self.packed)
        try:
            return optimizer_step(self.engine, objective, micro, lr, self.release_memory)
        except NonFiniteLossError as exc:
            where = ("" if part is None else f"part {part + 1}, ") + f"step {self.position.global_step + 1}"
            raise NonFiniteLossError(f"{exc} at {where}; stopped before the update; "
                                     f"{ckpt.describe_saved_state(self.out)}") from None

    def _record(self, row: dict) -> None:
        self.log.write(row)
        self.last_row = row
        if self.cfg.on_step is not None:
            self.cfg.on_step(row)
        self.progress.update(row)

    def _checkpoint_due(self, part: int | None) -> bool:
        """Every ``--save-every`` steps, except at a part's last step (the part's end is saved
        by the command)."""
        every = self.cfg.save_every
        still_in_part = self.position.part == (part or 0)
        return bool(every) and self.position.global_step % every == 0 and still_in_part

    def save_position(self, **extra: Any) -> None:
        """A resumable engine checkpoint at the current position (``extra``: see Position.client_state)."""
        ckpt.save_engine_state(self.engine, self.out, f"step-{self.position.global_step}",
                               self.position.client_state(self.fingerprint, **extra))
