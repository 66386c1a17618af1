"""The padding-free and lean-MLP paths on CUDA kernels (skipped without a GPU).

On CPU, tests/train/test_train_logprobs.py checks that packed rows and the lean MLP change no
number. On a GPU the two sides run different kernels: a packed segment goes through SDPA with
``is_causal`` and no mask (flash attention in bf16), a padded batch through SDPA with a mask
(memory-efficient or math kernel). These tests check the kernels agree: fp32 to rounding, bf16
within bf16's relative error (1e-3 to 1e-2).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# answers of a realistic length, so the kernels tile over several blocks
DEVICE = "cuda"
LENGTHS = [300, 41, 517, 128, 9, 260]


def _model(dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).to(DEVICE, dtype)


def _sequences(seed: int):
    import numpy as np

    from tso_train.data import EncodedSequence

    rng = np.random.default_rng(seed)
    out = []
    for n in LENGTHS:
        labels = np.zeros(n, dtype=bool)
        labels[rng.integers(1, n):] = True
        out.append(EncodedSequence(rng.integers(0, 1000, n), labels))
    return out


def _logps_and_grads(model, batch):
    from tso_train.logprobs import SequenceLogps

    model.zero_grad()
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    sums, counts = SequenceLogps(model, packed="cu_seqlens" in batch)(**batch)
    (sums * torch.linspace(0.5, 1.5, len(sums), device=DEVICE)).sum().backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters()}
    return sums.detach().float().cpu(), counts.cpu(), grads


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_packed_rows_match_padded_batches_on_cuda(dtype, tol):
    from tso_train.data import collate_sequences
    from tso_train.packing import enable_packing

    model = _model(dtype)
    seqs = _sequences(0)
    padded = _logps_and_grads(model, collate_sequences(seqs, pad_id=0))
    assert enable_packing(model)
    packed = _logps_and_grads(model, collate_sequences(seqs, pad_id=0, packed=True))
    assert packed[1].tolist() == padded[1].tolist()
    assert torch.isfinite(packed[0]).all()
    assert _rel(packed[0], padded[0]) < tol
    worst = max(_rel(packed[2][n], g) for n, g in padded[2].items())
    assert worst < tol * 5, worst  # gradients add up many more rounded terms


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_lean_mlp_matches_autograd_on_cuda(dtype, tol):
    from tso_train.data import collate_sequences
    from tso_train.mlp import use_lean_mlp

    model = _model(dtype)
    batch = collate_sequences(_sequences(1), pad_id=0)
    plain = _logps_and_grads(model, batch)
    assert use_lean_mlp(model) == 3
    lean = _logps_and_grads(model, batch)
    assert _rel(lean[0], plain[0]) < tol
    worst = max(_rel(lean[2][n], g) for n, g in plain[2].items())
    assert worst < tol * 5, worst
