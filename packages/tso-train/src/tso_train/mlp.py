"""A gated SiLU MLP (Llama, Mistral, Qwen…: ``down(silu(gate(x)) * up(x))``) that keeps less for
backward.

Autograd as written keeps four intermediate-sized tensors per token and layer for backward —
gate(x), up(x), silu(gate(x)) and their product — about half of a decoder layer's activation
memory. :class:`_GatedSiLUMLP` keeps only gate(x) and up(x) and recomputes the two elementwise
products in backward (no extra matrix multiply): less activation memory for a few elementwise
operations.

The weights are read directly, so this is for ZeRO 0–2 only: ZeRO-3 gathers a partitioned weight
only inside its own module's call. The switch is ``lean_mlp`` (tso_train.speed); the module's own
forward, which this replaces, is the reference it is tested against.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn


class _GatedSiLUMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_gate, w_up, w_down):
        gate = F.linear(x, w_gate)
        up = F.linear(x, w_up)
        out = F.linear(F.silu(gate) * up, w_down)
        ctx.save_for_backward(x, w_gate, w_up, w_down, gate, up)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w_gate, w_up, w_down, gate, up = ctx.saved_tensors
        sig = torch.sigmoid(gate)
        silu = gate * sig
        hidden = silu * up
        grad_hidden = grad_out @ w_down
        grad_up = grad_hidden * silu
        grad_gate = grad_hidden * up * (sig * (1 + gate * (1 - sig)))
        flat_x = x.reshape(-1, x.shape[-1])
        g_w_down = grad_out.reshape(-1, grad_out.shape[-1]).T @ hidden.reshape(-1, hidden.shape[-1])
        g_w_gate = grad_gate.reshape(-1, grad_gate.shape[-1]).T @ flat_x
        g_w_up = grad_up.reshape(-1, grad_up.shape[-1]).T @ flat_x
        grad_x = grad_gate @ w_gate + grad_up @ w_up
        return grad_x, g_w_gate, g_w_up, g_w_down


def gated_silu_mlp(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """``silu(x @ w_gate.T) * (x @ w_up.T) @ w_down.T``, keeping only the two projections for backward.

    >>> import torch
    >>> args = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((2, 3, 4), (5, 4), (5, 4), (4, 5))]
    >>> torch.autograd.gradcheck(gated_silu_mlp, args)
    True
    """
    return _GatedSiLUMLP.apply(x, w_gate, w_up, w_down)


def _is_gated_silu_mlp(module: nn.Module) -> bool:
    linears = [getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    if not all(type(m) is nn.Linear and m.bias is None for m in linears):
        return False
    act = getattr(module, "act_fn", None)
    return isinstance(act, nn.SiLU) or type(act).__name__ == "SiLUActivation" or act is F.silu


def _forward(self, x):
    return gated_silu_mlp(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)


def use_lean_mlp(model: nn.Module) -> int:
    """Route every plain gated-SiLU MLP of ``model`` through :func:`gated_silu_mlp`; returns how
    many. Not for ZeRO-3 (see the module docstring)."""
    n = 0
    for module in model.modules():
        if _is_gated_silu_mlp(module):
            module.forward = types.MethodType(_forward, module)
            n += 1
    return n
