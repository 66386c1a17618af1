"""The preference losses of docs/design.md, 1. The method, with the paper's sign slips fixed.

With r_w = β·(log π_θ(y_w|x) − log π_ref(y_w|x)), r_l likewise and h = r_w − r_l:

* ``dpo``       −log σ(h)                                   (paper eq. 11 drops the minus)
* ``dual-clip`` max(0, γ_w − r_w) + max(0, γ_l + r_l)        (eq. 10)
* ``ipo``       (h/β − 1/(2τ))²                              (eq. 12)
* ``cdpo``      −(1−ε)·log σ(h) − ε·log σ(−h)                (eq. 13, sign fixed)

Every loss also reports the DPO gradient weight σ(−h) (0.5 whenever π_θ = π_ref) and, for
dual-clip, which hinges are active.

>>> import torch
>>> lp = PairLogps(*(torch.zeros(2) for _ in range(4)))
>>> round(float(DPOLoss(beta=0.1)(lp).losses[0]), 6)       # ln 2 at a reference reset
0.693147
>>> float(DualClipLoss(beta=0.1, gamma_w=20, gamma_l=10)(lp).losses[0])
30.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from tso_train.settings import LOSS_NAMES


@dataclass(frozen=True)
class PairLogps:
    """Sequence log-probs ([B] each) of the policy and the reference for chosen and rejected."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor


@dataclass(frozen=True)
class LossOutput:
    losses: torch.Tensor  # [B], differentiable
    chosen_rewards: torch.Tensor  # [B] r_w, detached
    rejected_rewards: torch.Tensor  # [B] r_l, detached
    grad_weight: torch.Tensor  # [B] σ(−h), detached
    chosen_clip_active: torch.Tensor | None = None  # [B] bool, dual-clip only
    rejected_clip_active: torch.Tensor | None = None


class PreferenceLoss(Protocol):
    beta: float

    def __call__(self, logps: PairLogps) -> LossOutput: ...


def _rewards(beta: float, logps: PairLogps) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r_w = beta * (logps.policy_chosen - logps.ref_chosen)
    r_l = beta * (logps.policy_rejected - logps.ref_rejected)
    return r_w, r_l, r_w - r_l


def _output(losses, r_w, r_l, h, **clip) -> LossOutput:
    return LossOutput(losses, r_w.detach(), r_l.detach(), torch.sigmoid(-h).detach(), **clip)


@dataclass(frozen=True)
class DPOLoss:
    beta: float

    def __call__(self, logps: PairLogps) -> LossOutput:
        r_w, r_l, h = _rewards(self.beta, logps)
        return _output(-F.logsigmoid(h), r_w, r_l, h)


@dataclass(frozen=True)
class DualClipLoss:
    beta: float
    gamma_w: float
    gamma_l: float

    def __call__(self, logps: PairLogps) -> LossOutput:
        r_w, r_l, h = _rewards(self.beta, logps)
        chosen_gap = self.gamma_w - r_w
        rejected_gap = self.gamma_l + r_l
        losses = F.relu(chosen_gap) + F.relu(rejected_gap)
        return _output(
            losses, r_w, r_l, h,
            chosen_clip_active=(chosen_gap > 0).detach(),
            rejected_clip_active=(rejected_gap > 0).detach(),
        )


@dataclass(frozen=True)
class IPOLoss:
    beta: float
    tau: float

    def __call__(self, logps: PairLogps) -> LossOutput:
        r_w, r_l, h = _rewards(self.beta, logps)
        return _output((h / self.beta - 1.0 / (2.0 * self.tau)) ** 2, r_w, r_l, h)


@dataclass(frozen=True)
class CDPOLoss:
    beta: float
    eps: float

    def __call__(self, logps: PairLogps) -> LossOutput:
        r_w, r_l, h = _rewards(self.beta, logps)
        losses = -(1.0 - self.eps) * F.logsigmoid(h) - self.eps * F.logsigmoid(-h)
        return _output(losses, r_w, r_l, h)


def make_loss(name: str, *, beta: float, gamma_w: float, gamma_l: float, ipo_tau: float,
              cdpo_eps: float) -> PreferenceLoss:
    """The loss ``name`` (one of LOSS_NAMES) with its parameters; each loss reads β and its own
    (tso_train.settings.LOSS_PARAMETERS) and ignores the others. The defaults are FitConfig's."""
    if name == "dpo":
        return DPOLoss(beta)
    if name == "dual-clip":
        return DualClipLoss(beta, gamma_w, gamma_l)
    if name == "ipo":
        return IPOLoss(beta, ipo_tau)
    if name == "cdpo":
        return CDPOLoss(beta, cdpo_eps)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
