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


def test_fused_head_gives_the_same_gradients(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    g = torch.Generator().manual_seed(1)
    vocab = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.vocab_size
    ids = torch.randint(0, vocab, (2, 10), generator=g)
    attn = torch.ones_like(ids)
    labels = torch.zeros_like(ids, dtype=torch.bool)
    labels[:, 5:] = True
    grads = []
    for fused in (True, False):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        sums, _ = sequence_logps(model, ids, attn, labels, chunk_rows=4, fused_head=fused)
        sums.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name


def _random_sequences(vocab: int, lengths: list[int], seed: int):
    import numpy as np

    from tso_train.data import EncodedSequence

    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        labels = np.zeros(n, dtype=bool)
        labels[rng.integers(1, n):] = True  # an answer at the end
        labels[rng.integers(0, n)] = True  # and a stray labelled token (position 0 included)
        out.append(EncodedSequence(rng.integers(0, vocab, n), labels))
    return out


def _logps_and_grads(model, batch):
    from tso_train.logprobs import SequenceLogps

    model.zero_grad()
    sums, counts = SequenceLogps(model, packed="cu_seqlens" in batch)(**batch)
    (sums * torch.linspace(0.5, 1.5, len(sums))).sum().backward()
    return sums.detach(), counts, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_packed_rows_give_the_padded_logps_and_gradients(tiny_model_dir):
    """One packed row (no padding, per-segment causal attention, positions restarting at 0)
    computes each sequence exactly as a right-padded batch does, gradients included (GQA model)."""
    from transformers import AutoModelForCausalLM

    from tso_train.data import collate_sequences
    from tso_train.packing import enable_packing

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    seqs = _random_sequences(model.config.vocab_size, [9, 3, 17, 12, 2], seed=0)
    padded = _logps_and_grads(model, collate_sequences(seqs, pad_id=0))
    assert enable_packing(model)
    packed_batch = collate_sequences(seqs, pad_id=0, packed=True)
    assert packed_batch["input_ids"].shape == (1, sum(len(s) for s in seqs))
    packed = _logps_and_grads(model, packed_batch)
    assert torch.allclose(packed[0], padded[0], atol=1e-4)
    assert packed[1].tolist() == padded[1].tolist() == [int(s.label_mask[1:].sum()) for s in seqs]
    for name, g in padded[2].items():
        assert torch.allclose(packed[2][name], g, atol=1e-5, rtol=1e-4), name
    # the switched model still serves ordinary padded batches (plain SDPA with masks)
    assert torch.allclose(_logps_and_grads(model, collate_sequences(seqs, pad_id=0))[0], padded[0], atol=1e-5)


def test_packed_attention_keeps_a_sliding_window():
    """Mistral-style sliding-window attention inside each packed segment."""
    from transformers import MistralConfig, MistralForCausalLM

    from tso_train.data import collate_sequences
    from tso_train.packing import enable_packing

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, sliding_window=4, attn_implementation="sdpa")
    model = MistralForCausalLM(cfg)
    seqs = _random_sequences(50, [11, 3, 8], seed=1)
    padded = _logps_and_grads(model, collate_sequences(seqs, pad_id=0))
    assert enable_packing(model)
    packed = _logps_and_grads(model, collate_sequences(seqs, pad_id=0, packed=True))
    assert torch.allclose(packed[0], padded[0], atol=1e-4)
    for name, g in padded[2].items():
        assert torch.allclose(packed[2][name], g, atol=1e-5, rtol=1e-4), name


def test_lean_mlp_gives_the_same_logps_and_gradients(tiny_model_dir):
    """The gated-SiLU MLP that keeps only gate(x) and up(x) for backward changes no number."""
    from transformers import AutoModelForCausalLM

    from tso_train.data import collate_sequences
    from tso_train.mlp import use_lean_mlp

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = collate_sequences(_random_sequences(model.config.vocab_size, [7, 12, 4], seed=2), pad_id=0)
    plain = _logps_and_grads(model, batch)
    assert use_lean_mlp(model) == model.config.num_hidden_layers
    lean = _logps_and_grads(model, batch)
    assert torch.allclose(lean[0], plain[0], atol=1e-5)
    for name, g in plain[2].items():
        assert torch.allclose(lean[2][name], g, atol=1e-6, rtol=1e-5), name
