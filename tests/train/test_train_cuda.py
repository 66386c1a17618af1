"""The padding-free and lean-MLP paths on CUDA kernels (skipped without a GPU).

On CPU, tests/train/test_train_logprobs.py and tests/train/test_train_attention.py check that
packed rows and the lean MLP change no number. On a GPU the two sides run different kernels: a
packed row goes through one of tso_train.attention's kernels (varlen flash attention in bf16,
compiled flex attention, or per-segment SDPA), a padded batch through SDPA with a mask
(memory-efficient or math kernel). These tests check the kernels agree: fp32 to rounding, bf16
within bf16's relative error (1e-3 to 1e-2).
"""

from __future__ import annotations

import pytest
import torch

from tso_train.attention import varlen_function

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# answers of a realistic length, so the kernels tile over several blocks
DEVICE = "cuda"
LENGTHS = [300, 41, 517, 128, 9, 260]
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
CASES = [  # (kernel, dtype): varlen is flash attention, bf16/fp16 only
    ("varlen", torch.bfloat16), ("segments", torch.float32), ("segments", torch.bfloat16),
    ("flex", torch.float32), ("flex", torch.bfloat16),
]


@pytest.mark.parametrize(("kernel", "dtype"), CASES)
def test_packed_rows_match_padded_batches_on_cuda(packed_cases, kernel, dtype):
    from tso_train.data import collate_sequences
    from tso_train.packing import enable_packing

    if kernel == "varlen" and varlen_function() is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    tol = TOLERANCE[dtype]
    model = packed_cases.llama(dtype, DEVICE, layers=3)
    seqs = packed_cases.sequences(0, LENGTHS)
    padded = packed_cases.logps_and_grads(model, collate_sequences(seqs, pad_id=0), DEVICE)
    assert enable_packing(model)
    packed = packed_cases.logps_and_grads(model, collate_sequences(seqs, pad_id=0, packed=True), DEVICE, kernel)
    assert packed[1].tolist() == padded[1].tolist()
    assert torch.isfinite(packed[0]).all()
    assert packed_cases.rel(packed[0], padded[0]) < tol
    worst = max(packed_cases.rel(packed[2][n], g) for n, g in padded[2].items())
    assert worst < tol * 5, worst  # gradients add up many more rounded terms


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_lean_mlp_matches_autograd_on_cuda(packed_cases, dtype, tol):
    from tso_train.data import collate_sequences
    from tso_train.mlp import use_lean_mlp

    model = packed_cases.llama(dtype, DEVICE, layers=3)
    batch = collate_sequences(packed_cases.sequences(1, LENGTHS), pad_id=0)
    plain = packed_cases.logps_and_grads(model, batch, DEVICE)
    assert use_lean_mlp(model) == 3
    lean = packed_cases.logps_and_grads(model, batch, DEVICE)
    assert packed_cases.rel(lean[0], plain[0]) < tol
    worst = max(packed_cases.rel(lean[2][n], g) for n, g in plain[2].items())
    assert worst < tol * 5, worst
