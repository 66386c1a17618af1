"""The packed-row attention kernels (tso_train.attention) on one GPU, layer-sized: forward +
backward time of one attention call over a packed row, against the padded batch the same
sequences make, at the 0.5B model's shapes (12 query heads, 3 key/value heads, head size 128).

Rows of 16 and 64 sequences of 230-380 tokens (8 and 32 pairs of the training benchmark).
Variants: ``varlen`` (one flash-attention call, key/value heads repeated where this torch's
varlen_attn has no ``enable_gqa``), ``varlen_native_gqa`` (the flash kernel given the 3
key/value heads as they are: whether this torch accepts it), ``flex`` (compiled, block-diagonal
mask; last, as its first call compiles), ``segments`` (one SDPA call per sequence), ``padded``
(SDPA over the padded batch with its mask, key/value heads repeated: what a padded micro-batch
runs). Each output is compared
with ``segments`` (relative error); times are medians of CUDA-event timings.

    python -m benchmarks.bench_attention_gpu --out DIR [--tiny]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from tso_train import attention


def make_row(n_seqs: int, heads: int, kv_heads: int, head_dim: int, lengths: tuple[int, int], device, dtype, seed=0):
    rng = random.Random(seed)
    lens = [rng.randint(*lengths) for _ in range(n_seqs)]
    n = sum(lens)
    g = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v = (torch.randn(1, h, n, head_dim, generator=g).to(device, dtype).requires_grad_()
               for h in (heads, kv_heads, kv_heads))
    cu = torch.zeros(n_seqs + 1, dtype=torch.long)
    cu[1:] = torch.cumsum(torch.tensor(lens), 0)
    return q, k, v, cu, lens


def padded_batch(q, k, v, lens: list[int]):
    """The same sequences as a right-padded batch (leaf tensors; key/value heads repeated, as
    transformers does for a masked SDPA call) and its causal + padding mask."""
    longest, groups = max(lens), q.shape[1] // k.shape[1]
    ends = torch.tensor(lens).cumsum(0).tolist()
    starts = [0, *ends[:-1]]
    qb, kb, vb = (torch.stack([F.pad(x[0, :, s:e].detach(), (0, 0, 0, longest - (e - s)))
                               for s, e in zip(starts, ends)])
                  for x in (q, k, v))
    kb, vb = attention.repeat_kv_heads(kb, groups, 1), attention.repeat_kv_heads(vb, groups, 1)
    valid = torch.arange(longest, device=q.device)[None, :] < torch.tensor(lens, device=q.device)[:, None]
    causal = torch.ones(longest, longest, dtype=torch.bool, device=q.device).tril()
    mask = causal[None, None] & valid[:, None, None, :]
    return qb.requires_grad_(), kb.requires_grad_(), vb.requires_grad_(), mask


def unpad(out: torch.Tensor, lens: list[int]) -> torch.Tensor:
    """[B, H, L, D] padded rows -> [1, N, H, D] packed."""
    return torch.cat([out[t, :, :n] for t, n in enumerate(lens)], dim=1).transpose(0, 1)[None]


def native_gqa_varlen(q, k, v, row: attention.PackedRow, scaling) -> torch.Tensor:
    kwargs = attention.varlen_call_kwargs(scaling, gqa=True)
    fn = attention.varlen_function()
    out = fn(q[0].transpose(0, 1).contiguous(), k[0].transpose(0, 1).contiguous(), v[0].transpose(0, 1).contiguous(),
             row.cu_seqlens, row.cu_seqlens, row.max_len, row.max_len, **kwargs)
    return out[None]


def timed(fn, reps: int, on_gpu: bool) -> float:
    """Median seconds of fn() (forward + backward)."""
    import time

    times = []
    for i in range(reps + 3):
        if on_gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            t = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t
        if i >= 3:
            times.append(seconds)
    return sorted(times)[len(times) // 2]


def measure(n_seqs: int, args: argparse.Namespace) -> list[dict]:
    on_gpu = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if on_gpu else ("cpu", torch.float32)
    heads, kv_heads, head_dim, lengths = (12, 3, 128, (230, 380)) if not args.tiny else (4, 2, 16, (5, 40))
    q, k, v, cu, lens = make_row(n_seqs, heads, kv_heads, head_dim, lengths, device, dtype)
    scaling = head_dim ** -0.5
    grad = torch.randn(1, sum(lens), heads, head_dim, device=device, dtype=dtype)
    rows: dict = {}

    def row(kernel: str) -> attention.PackedRow:  # built once, as once per micro-batch in training
        if kernel not in rows:
            rows[kernel] = attention.packed_row(cu, device, kernel)
        return rows[kernel]

    qb, kb, vb, mask = padded_batch(q, k, v, lens)
    variants = {
        "segments": lambda: attention.packed_attention(q, k, v, row("segments"), scaling),
        "varlen": lambda: attention.packed_attention(q, k, v, row("varlen"), scaling),
        "varlen_native_gqa": lambda: native_gqa_varlen(q, k, v, row("varlen"), scaling),
        "padded": lambda: unpad(F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scaling), lens),
        "flex": lambda: attention.packed_attention(q, k, v, row("flex"), scaling),
    }
    reference = variants["segments"]().detach().float()
    results = []
    for name, fn in variants.items():
        entry = {"variant": name, "sequences": n_seqs, "tokens": sum(lens)}
        try:
            out = fn()
            entry["rel_err_vs_segments"] = float((out.float() - reference).norm() / reference.norm())
            backward = on_gpu or name != "flex"  # flex attention has no backward on CPU
            step = (lambda f=fn: f().backward(grad)) if backward else (lambda f=fn: f())
            entry["seconds_fwd_bwd" if backward else "seconds_fwd"] = timed(step, args.reps, on_gpu)
        except Exception as exc:  # noqa: BLE001 - a kernel this torch lacks is a result
            entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
            entry["traceback_tail"] = traceback.format_exc()[-800:]
        results.append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "traceback_tail"}), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="small shapes (a CPU rehearsal)")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"torch": torch.__version__, "varlen_attention": attention.varlen_function() is not None,
               "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "rows": []}
    for n_seqs in (16, 64) if not args.tiny else (4,):
        results["rows"] += measure(n_seqs, args)
        (args.out / "attention.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
