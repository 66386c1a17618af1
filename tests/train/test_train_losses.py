"""The four losses against hand-computed values, and their invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tso_train.losses import CDPOLoss, DPOLoss, DualClipLoss, IPOLoss, PairLogps, make_loss
from tso_train.settings import LOSS_NAMES, LOSS_PARAMETERS, FitConfig, defaults

PAPER = {k: defaults(FitConfig)[k] for k in ("beta", "gamma_w", "gamma_l", "ipo_tau", "cdpo_eps")}

# policy chosen/rejected, reference chosen/rejected (summed log-probs)
FIXED = PairLogps(torch.tensor([-10.0, -30.0]), torch.tensor([-20.0, -25.0]),
                  torch.tensor([-12.0, -28.0]), torch.tensor([-18.0, -26.0]))
# pair 0: r_w = 0.1*2 = 0.2, r_l = 0.1*(-2) = -0.2, h = 0.4
# pair 1: r_w = 0.1*(-2) = -0.2, r_l = 0.1*1 = 0.1, h = -0.3


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_rewards_and_grad_weight_by_hand():
    out = DPOLoss(beta=0.1)(FIXED)
    assert out.chosen_rewards.tolist() == pytest.approx([0.2, -0.2])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.2, 0.1])
    assert out.grad_weight.tolist() == pytest.approx([sig(-0.4), sig(0.3)])


def test_dpo_by_hand():
    assert DPOLoss(0.1)(FIXED).losses.tolist() == pytest.approx([-math.log(sig(0.4)), -math.log(sig(-0.3))])


def test_dual_clip_by_hand():
    out = DualClipLoss(beta=0.1, gamma_w=20, gamma_l=10)(FIXED)
    # max(0, 20 - r_w) + max(0, 10 + r_l)
    assert out.losses.tolist() == pytest.approx([19.8 + 9.8, 20.2 + 10.1])
    assert out.chosen_clip_active.tolist() == [True, True]
    small = DualClipLoss(beta=0.1, gamma_w=0.1, gamma_l=0.15)(FIXED)
    # pair 0: 0.1-0.2 < 0 (inactive), 0.15-0.2 < 0 (inactive); pair 1: 0.3, 0.25
    assert small.losses.tolist() == pytest.approx([0.0, 0.3 + 0.25])
    assert small.chosen_clip_active.tolist() == [False, True]
    assert small.rejected_clip_active.tolist() == [False, True]


def test_ipo_by_hand():
    # (h/β − 1/(2τ))² with τ = 0.2: (4 − 2.5)², (−3 − 2.5)²
    assert IPOLoss(beta=0.1, tau=0.2)(FIXED).losses.tolist() == pytest.approx([1.5**2, 5.5**2])


def test_cdpo_by_hand():
    expect = [-(0.7) * math.log(sig(h)) - 0.3 * math.log(sig(-h)) for h in (0.4, -0.3)]
    assert CDPOLoss(beta=0.1, eps=0.3)(FIXED).losses.tolist() == pytest.approx(expect)


def test_reference_reset_values():
    """π_θ = π_ref: DPO = ln 2, σ(−h) = 0.5, dual-clip = γ_w + γ_l, IPO = (1/(2τ))², cDPO = ln 2."""
    lp = PairLogps(*(torch.full((3,), -7.0) for _ in range(4)))
    assert DPOLoss(0.1)(lp).losses.tolist() == pytest.approx([math.log(2)] * 3)
    assert DPOLoss(0.1)(lp).grad_weight.tolist() == pytest.approx([0.5] * 3)
    assert DualClipLoss(0.1, 20, 10)(lp).losses.tolist() == pytest.approx([30.0] * 3)
    assert IPOLoss(0.1, 0.2)(lp).losses.tolist() == pytest.approx([6.25] * 3)
    assert CDPOLoss(0.1, 0.3)(lp).losses.tolist() == pytest.approx([math.log(2)] * 3)


finite = st.floats(-50, 50, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(finite, finite, finite, finite, st.floats(0.01, 1.0))
def test_dpo_gradient_is_minus_beta_sigma_minus_h(pc, pr, rc, rr, beta):
    """d loss / d logπ(y_w) = −β·σ(−h): the logged grad_weight is the true DPO weight."""
    policy_chosen = torch.tensor([pc], dtype=torch.float64, requires_grad=True)
    lp = PairLogps(policy_chosen, torch.tensor([pr], dtype=torch.float64),
                   torch.tensor([rc], dtype=torch.float64), torch.tensor([rr], dtype=torch.float64))
    out = DPOLoss(beta)(lp)
    out.losses.sum().backward()
    assert float(policy_chosen.grad) == pytest.approx(-beta * float(out.grad_weight), rel=1e-6, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(finite, finite, finite, finite)
def test_cdpo_with_no_label_noise_is_dpo_and_losses_are_nonnegative(pc, pr, rc, rr):
    lp = PairLogps(*(torch.tensor([v], dtype=torch.float64) for v in (pc, pr, rc, rr)))
    assert float(CDPOLoss(0.1, 0.0)(lp).losses) == pytest.approx(float(DPOLoss(0.1)(lp).losses))
    for name in LOSS_NAMES:
        assert float(make_loss(name, **PAPER)(lp).losses) >= 0.0


def test_every_loss_name_builds_its_loss_with_its_own_parameters():
    """LOSS_NAMES (tso_train.settings) is the one list: the CLI's choices, the settings check and
    make_loss all use it, and each loss reads only β and its LOSS_PARAMETERS."""
    built = {name: make_loss(name, **PAPER) for name in LOSS_NAMES}
    assert {name: type(loss) for name, loss in built.items()} == {
        "dual-clip": DualClipLoss, "dpo": DPOLoss, "ipo": IPOLoss, "cdpo": CDPOLoss}
    for name, loss in built.items():
        changed = {k: (v * 2 if k not in ("beta", *LOSS_PARAMETERS[name]) else v) for k, v in PAPER.items()}
        assert make_loss(name, **changed) == loss, name  # the other losses' parameters change nothing
        for own in LOSS_PARAMETERS[name]:
            assert make_loss(name, **{**PAPER, own: PAPER[own] / 2}) != loss, (name, own)


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("kto", **PAPER)
