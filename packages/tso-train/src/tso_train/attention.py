"""Causal attention over a packed row (tso_train.packing): each sequence attends only to itself.

A packed row is one sequence of N tokens made of R segments; its layout (:class:`PackedRow`) is
built once per micro-batch, before the forward, and every layer reuses it: the segment
boundaries on the device and on the host, the longest segment, and the kernel that runs it.
No layer reads a device tensor back to the host.

Three kernels, chosen by :func:`choose_kernel` from two switches (tso_train.speed):

* ``varlen``: ONE variable-length flash-attention call per layer over the whole row
  (``torch.nn.attention.varlen.varlen_attn``; CUDA, bf16/fp16, head size ≤ 256). Compute ∝ Σ L_i².
* ``flex``: ONE ``flex_attention`` call per layer with a block-diagonal causal mask (document
  ids); compiled on CUDA, blocks outside the diagonal are skipped. Any dtype, any device
  (unfused and slow without compilation: for tests on CPU).
* ``segments``: one SDPA call per segment, boundaries from the host copy. The plain path, and
  the fast one on CPU, where a call costs little and SDPA's CPU kernel is tiled well.

Grouped-query attention (fewer key/value heads) is handed to the kernel where it supports it
natively, else the key/value heads are repeated once per layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

KERNELS = ("varlen", "flex", "segments")
FLASH_DTYPES = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class PackedRow:
    """The layout of one packed row, shared by every layer of a forward pass."""

    kernel: str
    cu_seqlens: torch.Tensor  # [R + 1] int32 on the model's device
    bounds: tuple[int, ...]  # the same boundaries on the host
    max_len: int  # the longest segment
    block_mask: object | None = None  # flex only: the row's block-diagonal causal BlockMask


def choose_kernel(varlen: bool, flex: bool, device: torch.device | str) -> str:
    """The kernel a packed row runs with on ``device``: ``varlen`` where the switch is on and the
    device is CUDA with torch's varlen attention, else ``flex`` where its switch is on, else
    ``segments``. (A varlen row whose tensors turn out not to suit flash attention — fp32, a
    head size over 256 — falls back to ``segments`` at the call.)

    >>> choose_kernel(varlen=True, flex=False, device="cpu")
    'segments'
    >>> choose_kernel(varlen=False, flex=True, device="cpu")
    'flex'
    """
    if varlen and torch.device(device).type == "cuda" and varlen_function() is not None:
        return "varlen"
    return "flex" if flex else "segments"


def packed_row(cu_seqlens: torch.Tensor, device: torch.device | str, kernel: str) -> PackedRow:
    """The layout of a row whose segment boundaries are ``cu_seqlens`` [R + 1] (host or device;
    pass the host copy to keep the forward free of device-to-host reads)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown packed-attention kernel {kernel!r} (choose from {', '.join(KERNELS)})")
    bounds = tuple(int(b) for b in cu_seqlens.tolist())
    lengths = [e - s for s, e in zip(bounds[:-1], bounds[1:])]
    cu_device = torch.tensor(bounds, dtype=torch.int32).to(device, non_blocking=True)
    block_mask = _document_block_mask(bounds, device) if kernel == "flex" else None
    return PackedRow(kernel, cu_device, bounds, max(lengths, default=0), block_mask)


def packed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, row: PackedRow,
                     scaling: float | None = None, sliding_window: int | None = None,
                     dropout: float = 0.0) -> torch.Tensor:
    """Causal attention within each segment of the row. query [1, H, N, D], key/value
    [1, H_kv, N, D] (transformers' layout); returns [1, N, H, D], the layout o_proj reads."""
    if query.shape[0] != 1:
        raise ValueError("packed attention expects one packed row")
    kernel = row.kernel
    if dropout or (sliding_window is not None and row.max_len > sliding_window):
        kernel = "segments"  # only the per-segment path applies dropout or a sliding window
    if kernel == "varlen" and not (query.dtype in FLASH_DTYPES and query.shape[-1] <= 256):
        kernel = "segments"
    if kernel == "varlen":
        return _varlen(query, key, value, row, scaling)
    if kernel == "flex":
        return _flex(query, key, value, row, scaling)
    return _segments(query, key, value, row.bounds, scaling, sliding_window, dropout)


def repeat_kv_heads(x: torch.Tensor, groups: int, head_dim: int) -> torch.Tensor:
    """[..., H_kv, D] -> [..., H_kv * groups, D], query head h reading key/value head h // groups
    (transformers' repeat_kv order), along dimension ``head_dim``.

    >>> x = torch.arange(6.).reshape(1, 3, 2)  # N=1, H_kv=3, D=2
    >>> repeat_kv_heads(x, 2, head_dim=1)[0, :, 0].tolist()
    [0.0, 0.0, 2.0, 2.0, 4.0, 4.0]
    """
    if groups == 1:
        return x
    shape = list(x.shape)
    expanded = x.unsqueeze(head_dim + 1).expand(*shape[: head_dim + 1], groups, *shape[head_dim + 1:])
    shape[head_dim] *= groups
    return expanded.reshape(shape)


@lru_cache(maxsize=1)
def varlen_function() -> Callable | None:
    """torch's variable-length attention (torch ≥ 2.9, CUDA kernels), or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@lru_cache(maxsize=1)
def _varlen_parameters() -> frozenset[str]:
    fn = varlen_function()
    return frozenset(inspect.signature(fn).parameters) if fn is not None else frozenset()


def varlen_call_kwargs(scaling: float | None, gqa: bool) -> dict:
    """The keyword arguments that make ``varlen_attn`` causal on this torch: ``is_causal=True``
    (torch 2.9) or ``window_size=(-1, 0)`` (later), the scale where it takes one, and
    ``enable_gqa`` where it has the flag (torch ≥ 2.12)."""
    params = _varlen_parameters()
    kwargs: dict = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    if scaling is not None and "scale" in params:
        kwargs["scale"] = scaling
    if gqa and "enable_gqa" in params:
        kwargs["enable_gqa"] = True
    return kwargs


def _varlen(query, key, value, row: PackedRow, scaling) -> torch.Tensor:
    q = query[0].transpose(0, 1).contiguous()  # [N, H, D]
    k, v = key[0].transpose(0, 1), value[0].transpose(0, 1)  # [N, H_kv, D]
    groups = q.shape[1] // k.shape[1]
    kwargs = varlen_call_kwargs(scaling, gqa=groups > 1)
    if groups > 1 and "enable_gqa" not in kwargs:
        k, v = repeat_kv_heads(k, groups, head_dim=1), repeat_kv_heads(v, groups, head_dim=1)
    if scaling is not None and "scale" not in kwargs and abs(scaling - q.shape[-1] ** -0.5) > 1e-12:
        q = q * (scaling * q.shape[-1] ** 0.5)  # an old varlen_attn scales by 1/sqrt(D) only
    out = varlen_function()(q, k.contiguous(), v.contiguous(), row.cu_seqlens, row.cu_seqlens, row.max_len,
                            row.max_len, **kwargs)
    return out[None]


def _document_block_mask(bounds: tuple[int, ...], device):
    from torch.nn.attention.flex_attention import create_block_mask

    lengths = torch.tensor([e - s for s, e in zip(bounds[:-1], bounds[1:])])
    document = torch.repeat_interleave(torch.arange(len(lengths)), lengths).to(device)

    def causal_within_document(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (document[q_idx] == document[kv_idx])

    n = bounds[-1]
    return create_block_mask(causal_within_document, None, None, n, n, device=device)


@lru_cache(maxsize=2)
def _flex_function(on_cuda: bool) -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    # compiled, flex attention is a fused kernel that skips masked blocks; eager, it is a dense
    # reference implementation (fine for tests on CPU). dynamic: a packed row's length varies.
    return torch.compile(flex_attention, dynamic=True) if on_cuda else flex_attention


def _flex(query, key, value, row: PackedRow, scaling) -> torch.Tensor:
    flex = _flex_function(query.is_cuda)
    gqa = query.shape[1] != key.shape[1]
    out = flex(query, key, value, block_mask=row.block_mask, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2)


def _segments(query, key, value, bounds: tuple[int, ...], scaling, sliding_window, dropout: float) -> torch.Tensor:
    """One causal SDPA call per segment. On CUDA the key/value heads are repeated rather than
    passed with ``enable_gqa`` (which keeps SDPA off its fused kernels there)."""
    groups = query.shape[1] // key.shape[1]
    gqa = groups > 1 and not query.is_cuda
    if groups > 1 and query.is_cuda:
        key, value = repeat_kv_heads(key, groups, head_dim=1), repeat_kv_heads(value, groups, head_dim=1)
    lengths = [e - s for s, e in zip(bounds[:-1], bounds[1:])]
    outs = []
    # split, not per-segment slicing: a slice's backward writes into a zeroed full-size gradient
    # once per segment, split's backward concatenates once
    for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2)):
        n = q.shape[2]
        mask = None
        if sliding_window is not None and n > sliding_window:
            i = torch.arange(n, device=query.device)
            mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < sliding_window)
        outs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=scaling,
                                                   dropout_p=dropout, enable_gqa=gqa).transpose(1, 2))
    return torch.cat(outs, dim=1)
