"""Selective log-probs equal a naive full log_softmax gather."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tso_train.logprobs import selective_logps, sequence_logps


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(2, 50), st.integers(1, 16), st.integers(0, 10_000))
def test_selective_equals_log_softmax_gather(n, vocab, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g) * 5
    labels = torch.randint(0, vocab, (n,), generator=g)
    naive = torch.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    assert torch.allclose(selective_logps(logits, labels, chunk_rows=chunk), naive, atol=1e-5)


def test_sequence_logps_equals_naive_on_a_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (3, 12), generator=g)
    attn = torch.ones_like(ids)
    attn[1, 9:] = 0  # right padding
    labels = torch.zeros_like(ids, dtype=torch.bool)
    labels[0, 4:] = True
    labels[1, 5:9] = True
    labels[2, [3, 4, 8, 9]] = True  # multi-turn: two assistant spans
    with torch.no_grad():
        sums, counts = sequence_logps(model, ids, attn, labels, chunk_rows=3)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits.float(), -1)
    naive = []
    for b in range(3):
        total = sum(float(logp[b, t - 1, ids[b, t]]) for t in range(1, 12) if labels[b, t])
        naive.append(total)
    assert torch.allclose(sums.double(), torch.tensor(naive, dtype=torch.float64), atol=1e-4)
    assert counts.tolist() == [8, 4, 4]
