"""The packed-row attention kernels (tso_train.attention) against padded micro-batches, on CPU.

``flex`` runs for real (eager flex attention, fp32; forward only: flex attention has no
backward on CPU). ``varlen`` is flash attention, CUDA only:
here torch's kernel is replaced by a reference that checks flash's calling contract (token-major
[N, H, D] tensors, int32 boundaries, the longest segment, causal flags for the torch version at
hand) and computes the same function, so the glue around the kernel — layouts, grouped-query
heads, the causal switch of each torch version — is what is tested. tests/train/test_train_cuda.py
runs the real kernels on a GPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tso_train import attention
from tso_train.data import collate_sequences

LENGTHS = [37, 5, 64, 12, 2, 50]
SIGNATURES = {  # varlen_attn's keyword parameters, by torch version
    "2.9": frozenset({"is_causal", "return_aux"}),
    "2.10-2.11": frozenset({"return_aux", "scale", "window_size"}),
    "2.12+": frozenset({"return_aux", "scale", "window_size", "enable_gqa"}),
}


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, is_causal=None, window_size=None, scale=None,
                     enable_gqa=False, return_aux=None):
    """What flash attention's varlen kernel computes, with its calling contract asserted."""
    assert q.dim() == 3 and q.is_contiguous() and k.is_contiguous() and v.is_contiguous()
    assert cu_q.dtype == torch.int32 and torch.equal(cu_q, cu_k)
    assert is_causal is True or tuple(window_size) == (-1, 0)
    bounds = cu_q.tolist()
    lengths = [e - s for s, e in zip(bounds[:-1], bounds[1:])]
    assert max_q == max_k == max(lengths) and bounds[-1] == q.shape[0]
    assert enable_gqa or k.shape[1] == q.shape[1]
    outs = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        outs.append(F.scaled_dot_product_attention(q[s:e].transpose(0, 1), k[s:e].transpose(0, 1),
                                                   v[s:e].transpose(0, 1), is_causal=True, scale=scale,
                                                   enable_gqa=enable_gqa).transpose(0, 1))
    return torch.cat(outs)


@pytest.fixture()
def fake_varlen(monkeypatch):
    """torch's varlen attention replaced by the reference, fp32 allowed; returns a function that
    sets which torch version's signature the glue sees."""
    monkeypatch.setattr(attention, "varlen_function", lambda: reference_varlen)
    monkeypatch.setattr(attention, "FLASH_DTYPES", (torch.float32, torch.bfloat16, torch.float16))

    def use_signature(version: str) -> None:
        monkeypatch.setattr(attention, "_varlen_parameters", lambda: SIGNATURES[version])

    use_signature("2.12+")
    return use_signature


def _compare(packed_cases, kernel: str, tol: float = 1e-5, backward: bool = True) -> None:
    from tso_train.packing import enable_packing

    model = packed_cases.llama(torch.float32)
    seqs = packed_cases.sequences(0, LENGTHS)
    padded = packed_cases.logps_and_grads(model, collate_sequences(seqs, pad_id=0), backward=backward)
    assert enable_packing(model)
    packed = packed_cases.logps_and_grads(model, collate_sequences(seqs, pad_id=0, packed=True), kernel=kernel,
                                          backward=backward)
    assert packed[1].tolist() == padded[1].tolist()
    assert packed_cases.rel(packed[0], padded[0]) < tol
    if backward:
        worst = max(packed_cases.rel(packed[2][n], g) for n, g in padded[2].items())
        assert worst < tol * 10, worst


def test_segments_kernel_matches_padded_batches(packed_cases):
    _compare(packed_cases, "segments")


def test_flex_kernel_matches_padded_batches(packed_cases):
    _compare(packed_cases, "flex", backward=False)


@pytest.mark.parametrize("version", list(SIGNATURES))
def test_varlen_glue_matches_padded_batches_on_every_torch_signature(packed_cases, fake_varlen, version):
    fake_varlen(version)
    _compare(packed_cases, "varlen")


def test_varlen_falls_back_to_segments_where_flash_cannot_run(packed_cases, monkeypatch):
    """fp32 (flash attention takes bf16/fp16 only): the row runs per segment, never the kernel."""
    def refuse(*args, **kwargs):
        raise AssertionError("varlen kernel called with fp32 tensors")

    monkeypatch.setattr(attention, "varlen_function", lambda: refuse)
    _compare(packed_cases, "varlen")


@pytest.mark.parametrize("kernel", ["segments", "varlen"])
def test_layers_read_nothing_back_from_the_device(packed_cases, fake_varlen, monkeypatch, kernel):
    """The row's layout is built once per micro-batch; inside the decoder layers no tensor is
    converted to a host value (on a GPU each such read stalls the host until the device has
    caught up, once per layer). (Flex attention is left out: on CPU it runs its eager reference
    implementation, not the compiled kernel a GPU runs.)"""
    from tso_train.packing import ROW_KWARG, enable_packing, pack_sequences

    model = packed_cases.llama(torch.float32)
    assert enable_packing(model)
    batch = pack_sequences(packed_cases.sequences(1, LENGTHS))
    row = attention.packed_row(batch["cu_seqlens"], "cpu", kernel)
    bounds = list(row.bounds)
    # the reference kernel reads its boundaries from the host copy, as flash does on the device
    monkeypatch.setattr(attention, "varlen_function",
                        lambda: lambda q, k, v, cu, cu_k, mq, mk, **kw: _reference_from_bounds(q, k, v, bounds, kw))
    inside: list[bool] = []
    for layer in model.base_model.layers:
        layer.register_forward_pre_hook(lambda *_: inside.append(True))  # returns None: inputs unchanged
        layer.register_forward_hook(lambda *_: inside.clear())
    reads = []
    for name in ("tolist", "item", "__int__", "__float__", "__bool__", "__index__"):
        original = getattr(torch.Tensor, name)

        def guarded(self, *args, _original=original, _name=name, **kwargs):
            if inside:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, guarded)
    hidden = model.base_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                              **{ROW_KWARG: row})[0]
    monkeypatch.undo()
    assert reads == []
    assert hidden.shape == (1, sum(LENGTHS), model.config.hidden_size)


def _reference_from_bounds(q, k, v, bounds: list[int], kwargs: dict) -> torch.Tensor:
    gqa = kwargs.get("enable_gqa", False)
    outs = [F.scaled_dot_product_attention(q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1),
                                           is_causal=True, scale=kwargs.get("scale"), enable_gqa=gqa).transpose(0, 1)
            for s, e in zip(bounds[:-1], bounds[1:])]
    return torch.cat(outs)


def test_packed_row_layout():
    row = attention.packed_row(torch.tensor([0, 3, 10, 12]), "cpu", "varlen")
    assert row.bounds == (0, 3, 10, 12) and row.max_len == 7
    assert row.cu_seqlens.dtype == torch.int32 and row.cu_seqlens.tolist() == [0, 3, 10, 12]
    assert row.block_mask is None
    with pytest.raises(ValueError, match="unknown packed-attention kernel"):
        attention.packed_row(torch.tensor([0, 3]), "cpu", "fast")


@pytest.mark.parametrize(("version", "expected"), [
    ("2.9", {"is_causal": True}),
    ("2.10-2.11", {"window_size": (-1, 0), "scale": 0.125}),
    ("2.12+", {"window_size": (-1, 0), "scale": 0.125, "enable_gqa": True}),
])
def test_varlen_is_called_causal_on_each_torch(monkeypatch, version, expected):
    monkeypatch.setattr(attention, "_varlen_parameters", lambda: SIGNATURES[version])
    assert attention.varlen_call_kwargs(0.125, gqa=True) == expected


def test_repeated_heads_equal_sdpa_grouped_query_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, 9, 8, generator=g) for h in (6, 2, 2))
    grouped = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    repeated = F.scaled_dot_product_attention(q, attention.repeat_kv_heads(k, 3, head_dim=1),
                                              attention.repeat_kv_heads(v, 3, head_dim=1), is_causal=True)
    assert torch.allclose(grouped, repeated, atol=1e-6)
