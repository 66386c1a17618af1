"""Per-step metrics averaged over the WHOLE global batch (every micro-batch, every rank).

Each micro-batch adds its per-pair sums to a `StepAccumulator`; at the optimiser step the sums
are all-reduced across ranks and divided by the number of pairs, so a row describes all
``--global-batch`` pairs (OpenRLHF logs only the last micro-batch).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tso_train.engine import all_reduce_sum
from tso_train.losses import LossOutput

PAIR_METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "grad_weight",
    "clip/chosen_active",
    "clip/rejected_active",
)


class StepAccumulator:
    def __init__(self) -> None:
        self.sums = torch.zeros(len(PAIR_METRICS) + 2, dtype=torch.float64)  # + pairs, tokens
        self.has_clip = False

    def add(self, out: LossOutput, policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, n_tokens: int) -> None:
        margins = out.chosen_rewards - out.rejected_rewards
        clip_c = out.chosen_clip_active if out.chosen_clip_active is not None else torch.zeros_like(margins)
        clip_r = out.rejected_clip_active if out.rejected_clip_active is not None else torch.zeros_like(margins)
        self.has_clip |= out.chosen_clip_active is not None
        values = [
            out.losses.detach(), out.chosen_rewards, out.rejected_rewards, margins, (margins > 0),
            policy_chosen.detach(), policy_rejected.detach(), out.grad_weight, clip_c, clip_r,
        ]
        row = torch.stack([v.double().sum().cpu() for v in values])
        self.sums[: len(PAIR_METRICS)] += row
        self.sums[-2] += len(margins)
        self.sums[-1] += n_tokens

    def reduce(self) -> tuple[dict[str, float], int]:
        """All-reduce across ranks; return per-pair means and the global token count."""
        total = all_reduce_sum(self.sums.clone())
        pairs = max(1.0, float(total[-2]))
        row = {name: float(total[i]) / pairs for i, name in enumerate(PAIR_METRICS)}
        if not self.has_clip:
            del row["clip/chosen_active"], row["clip/rejected_active"]
        return row, int(total[-1])


class MetricsLog:
    """Append-only JSONL, one row per optimiser step; on resume rows past the step are cut."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def reset(self) -> None:
        if self.enabled and self.path.exists():
            self.path.unlink()

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def live_line(row: dict) -> str:
    """A compact line for the progress bar.

    >>> live_line({"loss": 0.6931, "rewards/margins": 0.0, "rewards/accuracies": 0.5, "grad_weight": 0.5, "lr": 1e-6})
    'loss 0.6931 margin +0.000 acc 0.50 σ(-h) 0.500 lr 1.0e-06'
    """
    if "rewards/margins" not in row:  # sft rows
        return f"loss {row['loss']:.4f} lr {row['lr']:.1e}"
    return (
        f"loss {row['loss']:.4f} margin {row['rewards/margins']:+.3f} acc {row['rewards/accuracies']:.2f} "
        f"σ(-h) {row['grad_weight']:.3f} lr {row['lr']:.1e}"
    )
