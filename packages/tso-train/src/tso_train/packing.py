"""Padding-free batches: a micro-batch's sequences packed end to end into one row.

A padded micro-batch computes every layer on ``rows × longest`` positions, real tokens and
padding alike (and keeps activations for all of them). Packed, the linear layers see only real
tokens. Attention must not cross sequence
boundaries, so the model runs with the ``tso_packed`` attention function registered below:
given the row's layout (``tso_packed_row``, a tso_train.attention.PackedRow built once per
micro-batch), it runs causal attention within each segment — one variable-length kernel call
per layer on a GPU, compute ∝ Σ L_i², no N × N mask is ever built. RoPE positions restart at 0
in every segment (``position_ids``), so each sequence is computed exactly as it would be alone.

Without ``tso_packed_row`` the function is plain SDPA with the usual masks, so a model switched
to it still works for ordinary (padded) calls. Whether a run packs is ``--packing/--no-packing``,
else the device's default (tso_train.speed.SpeedSwitches.packing).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tso_train.attention import packed_attention

PACKED_ATTENTION = "tso_packed"
ROW_KWARG = "tso_packed_row"  # the model-call keyword that carries a tso_train.attention.PackedRow


def pack_sequences(seqs: Sequence) -> dict[str, torch.Tensor]:
    """Concatenate EncodedSequences into one row: input_ids, position_ids, label_mask [1, N] and
    the segment boundaries ``cu_seqlens`` [R + 1]. A segment's first token is never a label (no
    position before it in the same sequence scores it).

    >>> import numpy as np
    >>> from tso_train.data import EncodedSequence
    >>> a = EncodedSequence(np.array([5, 6, 7]), np.array([True, False, True]))
    >>> b = EncodedSequence(np.array([8, 9]), np.array([False, True]))
    >>> p = pack_sequences([a, b])
    >>> p["input_ids"].tolist(), p["position_ids"].tolist(), p["cu_seqlens"].tolist()
    ([[5, 6, 7, 8, 9]], [[0, 1, 2, 0, 1]], [0, 3, 5])
    >>> p["label_mask"].tolist()
    [[False, False, True, False, True]]
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    cu = torch.zeros(len(seqs) + 1, dtype=torch.long)
    torch.cumsum(lengths, 0, out=cu[1:])
    ids = torch.cat([torch.from_numpy(s.input_ids) for s in seqs])
    labels = torch.cat([torch.from_numpy(s.label_mask) for s in seqs])
    labels[cu[:-1]] = False
    starts = torch.repeat_interleave(cu[:-1], lengths)
    positions = torch.arange(int(cu[-1])) - starts
    return {"input_ids": ids[None], "position_ids": positions[None], "label_mask": labels[None], "cu_seqlens": cu}


def packed_attention_forward(module: nn.Module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs):
    """A transformers attention function: attention within each segment of a packed row (the
    row's layout and kernel come in ``tso_packed_row``, see tso_train.attention), else SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    row = kwargs.pop(ROW_KWARG, None)
    if row is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    for name in ("softcap", "s_aux"):
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"packed attention does not support {name}")
    return packed_attention(query, key, value, row, scaling, kwargs.get("sliding_window"), dropout), None


def _packed_mask(*args, attention_mask=None, **kwargs):
    """SDPA's mask, except none at all when there is no 2-D mask: a packed row (its segments
    are separated by the attention function) or an unpadded batch (plain causal)."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register_packed_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
    AttentionMaskInterface.register(PACKED_ATTENTION, _packed_mask)


def supports_packing(model: nn.Module) -> bool:
    """Models whose attention goes through transformers' attention interface as SDPA or eager,
    without logit soft-capping or attention sinks (which per-segment SDPA does not do)."""
    cfg = getattr(model, "config", None)
    if cfg is None or not getattr(model, "_supports_attention_backend", False):
        return False
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager", PACKED_ATTENTION):
        return False
    if any(getattr(cfg, a, None) is not None for a in ("attn_logit_softcapping", "sliding_window_pattern")):
        return False
    return not any(getattr(cfg, sub, None) is not None for sub in ("text_config", "vision_config"))


def enable_packing(model: nn.Module) -> bool:
    """Switch ``model`` to the packed attention function when it supports it; returns whether it did."""
    if not supports_packing(model):
        return False
    register_packed_attention()
    model.config._attn_implementation = PACKED_ATTENTION
    return True
