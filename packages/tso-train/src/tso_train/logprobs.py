"""Per-sequence log-probabilities of the labelled (assistant) tokens.

Memory matters here: a full-vocabulary fp32 log-softmax over every position of a batch is the
largest tensor of a DPO step (batch × length × vocab × 4 bytes). We avoid it twice over:

1. the LM head runs only on the positions whose next token is a label (assistant tokens),
   not on prompt tokens or padding;
2. each token's log-prob is ``logit[label] - logsumexp(logits)``, computed in fp32 a chunk of
   rows at a time, so no full log-softmax tensor is ever built;
3. optionally (``fused_head=True``, ZeRO 0-2 only) the head's logits are recomputed per chunk in
   backward rather than kept: less memory for a second head matrix multiply. The switch is
   ``fused_lm_head`` (tso_train.speed), off by default: on CPU the recomputation costs more time
   than the memory is worth.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_CHUNK_ROWS = 1024


def selective_logps(logits: torch.Tensor, labels: torch.Tensor, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """log softmax(logits)[label] per row of ``logits`` [N, V], in fp32, chunk by chunk.

    >>> import torch
    >>> x = torch.randn(5, 7); y = torch.tensor([0, 3, 6, 2, 2])
    >>> ref = torch.log_softmax(x, -1).gather(1, y[:, None]).squeeze(1)
    >>> bool(torch.allclose(selective_logps(x, y, chunk_rows=2), ref, atol=1e-6))
    True
    """
    out = []
    for start in range(0, logits.shape[0], chunk_rows):
        chunk = logits[start : start + chunk_rows].float()
        picked = chunk.gather(1, labels[start : start + chunk_rows, None]).squeeze(1)
        out.append(picked - torch.logsumexp(chunk, dim=-1))
    if not out:
        return logits.new_zeros(0, dtype=torch.float32)
    return torch.cat(out)


class _ChunkedHeadLogps(torch.autograd.Function):
    """log softmax(hidden @ W.T)[label] per row, chunk by chunk, never storing the logits.

    Forward keeps only the hidden rows and one logsumexp per row; backward recomputes each
    chunk's logits. Peak extra memory is one chunk of logits instead of rows × vocab.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_rows: int):
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32 at least, fp64 stays fp64
        out = torch.empty(hidden.shape[0], dtype=acc, device=hidden.device)
        lse_all = torch.empty_like(out)
        for s in range(0, hidden.shape[0], chunk_rows):
            logits = (hidden[s : s + chunk_rows] @ weight.T).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            out[s : s + chunk_rows] = logits.gather(1, labels[s : s + chunk_rows, None]).squeeze(1) - lse
            lse_all[s : s + chunk_rows] = lse
        ctx.save_for_backward(hidden, weight, labels, lse_all)
        ctx.chunk_rows = chunk_rows
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, labels, lse_all = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        acc = lse_all.dtype
        grad_weight = torch.zeros_like(weight, dtype=acc) if ctx.needs_input_grad[1] else None
        for s in range(0, hidden.shape[0], ctx.chunk_rows):
            h = hidden[s : s + ctx.chunk_rows]
            logits = (h @ weight.T).to(acc)
            # d(logit[y] - lse)/d logits = onehot(y) - softmax
            grad_logits = -torch.exp(logits - lse_all[s : s + ctx.chunk_rows, None])
            grad_logits.scatter_add_(1, labels[s : s + ctx.chunk_rows, None],
                                     torch.ones_like(grad_logits[:, :1]))
            grad_logits *= grad_out[s : s + ctx.chunk_rows, None].to(acc)
            grad_logits = grad_logits.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[s : s + ctx.chunk_rows] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight += (grad_logits.T @ h).to(acc)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None


def chunked_head_logps(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                       chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Log-probs of ``labels`` under ``hidden @ weight.T`` without materialising the logits.

    >>> import torch
    >>> h = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    >>> w = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    >>> y = torch.tensor([0, 8, 3, 3, 1, 5])
    >>> torch.autograd.gradcheck(lambda a, b: chunked_head_logps(a, b, y, 4), (h, w))
    True
    """
    return _ChunkedHeadLogps.apply(hidden, weight, labels, chunk_rows)


def _uses_plain_lm_head(model: nn.Module) -> bool:
    """True when logits = lm_head(last hidden state) with no soft-capping or scaling."""
    cfg = getattr(model, "config", None)
    if cfg is None or model.get_output_embeddings() is None:
        return False
    for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
        if getattr(cfg, attr, None) not in (None, 1, 1.0):
            return False
    return getattr(model, "base_model", None) is not None and model.base_model is not model


def sequence_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    label_mask: torch.Tensor,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    fused_head: bool = False,
    position_ids: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    attention_kernel: str = "segments",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob of the labelled tokens of each sequence, and the number of such tokens.

    Token t (t ≥ 1) is scored by the model's output at position t-1. Either a right-padded batch
    (``attention_mask``) or one packed row (``position_ids`` and segment boundaries
    ``cu_seqlens``, from :func:`tso_train.packing.pack_sequences`, on a model switched to packed
    attention, run with ``attention_kernel``, see tso_train.attention; keep ``cu_seqlens`` on the
    host, where the row's layout is read once) — the results are one per sequence either way.
    ``fused_head`` computes the LM head chunk by chunk with recomputation in backward (no logits
    kept); never use it under ZeRO-3, whose partitioned head weight is only whole inside the head
    module's own call.
    """
    targets = label_mask[:, 1:]
    labels = input_ids[:, 1:][targets]
    model_kwargs: dict = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if cu_seqlens is None:
        n_seqs = input_ids.shape[0]
        rows = torch.arange(n_seqs, device=input_ids.device)[:, None].expand_as(targets)[targets]
    else:
        from tso_train.attention import packed_row
        from tso_train.packing import ROW_KWARG

        n_seqs = cu_seqlens.shape[0] - 1
        row = packed_row(cu_seqlens, input_ids.device, attention_kernel)
        positions = torch.arange(1, input_ids.shape[1], device=input_ids.device)[targets[0]]
        rows = torch.searchsorted(row.cu_seqlens, positions.to(torch.int32), right=True) - 1
        model_kwargs.update(position_ids=position_ids, **{ROW_KWARG: row})
    if _uses_plain_lm_head(model):
        hidden = model.base_model(**model_kwargs)[0]
        head = model.get_output_embeddings()
        selected = hidden[:, :-1][targets]
        del hidden
        if fused_head and getattr(head, "bias", None) is None:
            logits = None
            token_logps = chunked_head_logps(selected, head.weight, labels, chunk_rows).float()
        else:
            logits = head(selected)
    else:  # fall back to the model's own forward (e.g. soft-capped logits)
        logits = model(**model_kwargs).logits[:, :-1][targets]
    if logits is not None:
        token_logps = selective_logps(logits, labels, chunk_rows)
    sums = torch.zeros(n_seqs, dtype=torch.float32, device=input_ids.device).index_add(0, rows, token_logps)
    counts = torch.bincount(rows, minlength=n_seqs)
    return sums, counts


class SequenceLogps(nn.Module):
    """Wraps a causal LM so that ``engine(batch)`` returns per-row (summed log-probs, counts).

    DeepSpeed wraps this module; everything (including ZeRO-3 parameter gathering) happens
    inside its forward.
    """

    def __init__(self, lm: nn.Module, chunk_rows: int = DEFAULT_CHUNK_ROWS, fused_head: bool = False,
                 packed: bool = False, attention_kernel: str = "segments") -> None:
        super().__init__()
        self.lm = lm
        self.chunk_rows = chunk_rows
        self.fused_head = fused_head
        self.packed = packed  # batches come packed (tso_train.packing); the lm uses packed attention
        self.attention_kernel = attention_kernel  # how packed rows attend (tso_train.attention)

    def forward(self, input_ids, label_mask, attention_mask=None, position_ids=None, cu_seqlens=None):
        return sequence_logps(self.lm, input_ids, attention_mask, label_mask, self.chunk_rows, self.fused_head,
                              position_ids=position_ids, cu_seqlens=cu_seqlens, attention_kernel=self.attention_kernel)
