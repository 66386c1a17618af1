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
from tso_train.errors import TSOTrainError
from tso_train.files import atomic_write_text
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
        """Keep the rows of steps ≤ ``step`` (checked by :func:`check_resumable`), atomically."""
        if not self.enabled or not self.path.exists():
            return
        rows, _ = parse_metrics(self.path, allow_torn_tail=True)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))

    def reset(self) -> None:
        if self.enabled and self.path.exists():
            self.path.unlink()

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


def parse_metrics(path: Path, *, allow_torn_tail: bool = False) -> tuple[list[dict], bool]:
    """The rows of a metrics file and whether its last line was torn (cut short by a kill: no
    newline and not JSON). Any other malformed line is an error naming the file and line; a torn
    last line is one too unless ``allow_torn_tail``."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TSOTrainError(f"{path}: cannot read ({exc})") from None
    lines = text.split("\n")
    rows: list[dict] = []
    torn = False
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines) and allow_torn_tail:  # the last line, without its newline
                torn = True
                continue
            raise TSOTrainError(f"{path}:{n}: not a JSON metrics row ({exc.msg})") from None
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise TSOTrainError(f"{path}:{n}: not a metrics row (no whole-number 'step')")
        rows.append(row)
    return rows, torn


def check_resumable(path: Path, global_step: int) -> None:
    """Before a resume from ``global_step``: the file holds the rows of steps 1..global_step in
    order (rows past it, and a torn last line, are cut by the resume)."""
    if global_step == 0 and not path.exists():
        return
    if not path.exists():
        raise TSOTrainError(f"{path}: missing, but the checkpoint is at step {global_step}; cannot resume")
    rows, _ = parse_metrics(path, allow_torn_tail=True)
    steps = [r["step"] for r in rows if r["step"] <= global_step]
    if steps != list(range(1, global_step + 1)):
        raise TSOTrainError(f"{path}: holds steps {_ranges(steps)}, but the checkpoint is at step {global_step} "
                            f"(steps 1-{global_step} expected); cannot resume")


def _ranges(steps: list[int]) -> str:
    """
    >>> _ranges([1, 2, 3, 5, 7, 8])
    '1-3, 5, 7-8'
    >>> _ranges([])
    'none'
    """
    out: list[str] = []
    for i, s in enumerate(steps):
        if i and s == steps[i - 1] + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{s}"
        else:
            out.append(str(s))
    return ", ".join(out) or "none"


def read_metrics(path: Path) -> list[dict]:
    """Every row of a metrics file; a malformed line is a one-line error (file:line)."""
    return parse_metrics(path)[0]


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
