"""What one optimiser step minimises, micro-batch by micro-batch: `fit`'s preference loss or
`sft`'s negative log-likelihood.

The step (tso_train.step) is the same for both: it hands each micro-batch's items to the
objective to batch, runs the model, and backpropagates what the objective returns. The
objective also keeps the step's metrics, summed over its micro-batches and then over the ranks,
so a metrics row describes the whole global batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from tso_train.data import EncodedPair, EncodedSequence, collate_pairs, collate_sequences
from tso_train.engine import all_reduce_sum, world_size
from tso_train.losses import PairLogps, PreferenceLoss
from tso_train.metrics import StepAccumulator


class Objective(Protocol):
    def size(self, item: int) -> int:
        """What micro-batches are balanced or sorted by (tso_train.data.split_global_batch)."""

    def collate(self, items: list[int]) -> dict[str, torch.Tensor]:
        """The model inputs of a micro-batch."""

    def begin_step(self, micro_batches: list[list[int]]) -> None:
        """Before the first micro-batch of a step (this rank's micro-batches)."""

    def loss(self, items: list[int], sums: torch.Tensor, counts: torch.Tensor, n_tokens: int) -> torch.Tensor:
        """The scalar to backpropagate for one micro-batch, from the model's per-sequence summed
        log-probs and token counts; records the micro-batch's metrics."""

    def end_step(self) -> tuple[dict[str, float], int]:
        """The step's metrics over all ranks (``loss`` first) and its real tokens over all ranks."""

    def checkpoint_state(self) -> dict[str, Any]:
        """What a resume needs besides the weights, the optimiser and the loop position."""


@dataclass
class PreferenceObjective:
    """A preference loss over pairs; chosen and rejected go through the model in one forward
    pass. ``reference``: the part's reference log-probs [n pairs, 2] (chosen, rejected)."""

    pairs: list[EncodedPair]
    pad_id: int
    packed: bool
    reference: torch.Tensor
    loss_fn: PreferenceLoss
    micro_batch: int
    length_average: bool = False
    _metrics: StepAccumulator = field(default_factory=StepAccumulator, init=False)

    def size(self, item: int) -> int:
        return self.pairs[item].n_tokens if self.packed else self.pairs[item].length

    def collate(self, items: list[int]) -> dict[str, torch.Tensor]:
        return collate_pairs([self.pairs[i] for i in items], self.pad_id, self.packed)

    def begin_step(self, micro_batches: list[list[int]]) -> None:
        self._metrics = StepAccumulator()

    def loss(self, items: list[int], sums: torch.Tensor, counts: torch.Tensor, n_tokens: int) -> torch.Tensor:
        b = len(items)
        ref = self.reference[items].to(device=sums.device, dtype=sums.dtype)
        chosen, rejected, ref_chosen, ref_rejected = sums[:b], sums[b:], ref[:, 0], ref[:, 1]
        if self.length_average:
            n_chosen, n_rejected = counts[:b].clamp(min=1), counts[b:].clamp(min=1)
            chosen, rejected = chosen / n_chosen, rejected / n_rejected
            ref_chosen, ref_rejected = ref_chosen / n_chosen, ref_rejected / n_rejected
        out = self.loss_fn(PairLogps(chosen, rejected, ref_chosen, ref_rejected))
        self._metrics.add(out, chosen, rejected, n_tokens)
        # DeepSpeed divides by the accumulation steps and the ranks average their gradients:
        # the update is the mean over the global batch
        return out.losses.sum() / self.micro_batch

    def end_step(self) -> tuple[dict[str, float], int]:
        return self._metrics.reduce()

    def checkpoint_state(self) -> dict[str, Any]:
        return {"ref": self.reference}


@dataclass
class NLLObjective:
    """The token-mean negative log-likelihood of the labelled (assistant) tokens over the whole
    global batch: every micro-batch and rank divides by the same global token count."""

    sequences: list[EncodedSequence]
    pad_id: int
    packed: bool
    _scale: float = field(default=0.0, init=False)
    _global_tokens: float = field(default=0.0, init=False)
    _nll: torch.Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.float64), init=False)
    _tokens: int = field(default=0, init=False)

    def size(self, item: int) -> int:
        return len(self.sequences[item])

    def collate(self, items: list[int]) -> dict[str, torch.Tensor]:
        return collate_sequences([self.sequences[i] for i in items], self.pad_id, self.packed)

    def begin_step(self, micro_batches: list[list[int]]) -> None:
        local = sum(int(self.sequences[i].label_mask[1:].sum()) for items in micro_batches for i in items)
        self._global_tokens = float(all_reduce_sum(torch.tensor([float(local)], dtype=torch.float64))[0])
        # undoes DeepSpeed's 1/accumulation steps and the ranks' mean
        self._scale = len(micro_batches) * world_size() / self._global_tokens
        self._nll = torch.zeros(1, dtype=torch.float64)
        self._tokens = 0

    def loss(self, items: list[int], sums: torch.Tensor, counts: torch.Tensor, n_tokens: int) -> torch.Tensor:
        nll = -sums.sum()
        self._nll += nll.detach().double().cpu()
        self._tokens += n_tokens
        return nll * self._scale

    def end_step(self) -> tuple[dict[str, float], int]:
        totals = all_reduce_sum(torch.tensor([float(self._nll), float(self._tokens)], dtype=torch.float64))
        return {"loss": float(totals[0]) / self._global_tokens}, int(totals[1])

    def checkpoint_state(self) -> dict[str, Any]:
        return {}
