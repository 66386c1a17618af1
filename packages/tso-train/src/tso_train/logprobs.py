"""Per-sequence log-probabilities of the labelled (assistant) tokens.

Memory matters here: a full-vocabulary fp32 log-softmax over every position of a batch is the
largest tensor of a DPO step (batch × length × vocab × 4 bytes). We avoid it twice over:

1. the LM head runs only on the positions whose next token is a label (assistant tokens),
   not on prompt tokens or padding;
2. each token's log-prob is ``logit[label] - logsumexp(logits)``, computed in fp32 a chunk of
   rows at a time, so no full log-softmax tensor is ever built.
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
    attention_mask: torch.Tensor,
    label_mask: torch.Tensor,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob of the labelled tokens of each row, and the number of such tokens.

    Token t (t ≥ 1) is scored by the model's output at position t-1.
    """
    targets = label_mask[:, 1:]
    labels = input_ids[:, 1:][targets]
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(targets)[targets]
    if _uses_plain_lm_head(model):
        hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]
        logits = model.get_output_embeddings()(hidden[:, :-1][targets])
    else:  # fall back to the model's own forward (e.g. soft-capped logits)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1][targets]
    token_logps = selective_logps(logits, labels, chunk_rows)
    sums = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    sums = sums.index_add(0, rows, token_logps)
    counts = targets.sum(dim=1)
    return sums, counts


class SequenceLogps(nn.Module):
    """Wraps a causal LM so that ``engine(batch)`` returns per-row (summed log-probs, counts).

    DeepSpeed wraps this module; everything (including ZeRO-3 parameter gathering) happens
    inside its forward.
    """

    def __init__(self, lm: nn.Module, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        super().__init__()
        self.lm = lm
        self.chunk_rows = chunk_rows

    def forward(self, input_ids, attention_mask, label_mask):
        return sequence_logps(self.lm, input_ids, attention_mask, label_mask, self.chunk_rows)
