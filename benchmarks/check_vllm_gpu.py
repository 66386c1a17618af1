"""Smoke check of the vLLM generation backend on a GPU: does it load a model and generate?

Builds a tiny Llama locally (tso_train.tiny; nothing downloaded), runs ``VLLMBackend`` on N
chat requests and writes what happened — vLLM's version or the import error, results without
error, generated tokens/s — to OUT/vllm.json. Where vLLM is not installed it records that and
exits 0: it is a probe, so a missing engine is a finding, not a crash.

    python benchmarks/check_vllm_gpu.py --out DIR [--requests 256] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path


def probe(args: argparse.Namespace) -> dict:
    try:
        import vllm
    except Exception as exc:  # ImportError, or a broken install's own error
        return {"vllm": None, "ok": False, "error": f"import vllm: {type(exc).__name__}: {exc}"}
    info: dict = {"vllm": vllm.__version__}
    try:
        from tso_data.generate.backend import Request, SamplingParams
        from tso_data.generate.vllm_backend import VLLMBackend, VLLMSettings
        from tso_train.tiny import build_tiny_causal_lm

        model_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "tso-vllm-tiny"
        build_tiny_causal_lm(model_dir)
        params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=args.max_tokens, seed=0)
        requests = [Request(key=f"r{i}", messages=[{"role": "user", "content": f"count to {i}"}], params=params)
                    for i in range(args.requests)]
        start = time.time()
        backend = VLLMBackend(VLLMSettings(str(model_dir), gpu_memory_utilization=0.3, max_model_len=512))
        info["load_s"] = round(time.time() - start, 1)
        start = time.time()
        results = list(backend.run(requests))
        elapsed = time.time() - start
        backend.close()
        good = [r for r in results if r.error is None]
        tokens = sum(r.completion_tokens or 0 for r in good)
        info.update(ok=len(good) == len(requests), requests=len(requests), results=len(results),
                    without_error=len(good),
                    completion_tokens=tokens, generate_s=round(elapsed, 2), tokens_per_s=tokens / elapsed,
                    errors=sorted({r.error for r in results if r.error})[:5])
    except Exception as exc:
        info.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:])
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    info = probe(args)
    (args.out / "vllm.json").write_text(json.dumps(info, indent=2))
    print(json.dumps({k: v for k, v in info.items() if k != "traceback"}), flush=True)


if __name__ == "__main__":
    main()
