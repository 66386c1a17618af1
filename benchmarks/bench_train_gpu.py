"""`tso-train fit` on one GPU: bf16, ZeRO-2 and ZeRO-3, a ~0.55B Llama built locally.

Run where a GPU is lent (see README, "Benchmarks"). Self-contained: no data set or weights
are downloaded; the pairs are synthetic text (throughput and correctness, not quality).
Reports tokens/s, MFU (6·N FLOPs per trained token over the optimiser steps, against the
card's dense bf16 peak), peak GPU memory, and the first step's DPO loss, which must be
ln 2 because the reference is the policy at the start of a part.

Arms (``--arms``, comma-separated): ``zero2_packed``, ``zero2_padded``, ``zero3_packed``,
``zero3_padded`` — ZeRO stage × padding-free packing (the trainer's default) or ``--no-packing``
(right-padded, length-sorted micro-batches). tokens/s counts real (non-pad) tokens in both, so
packed and padded arms compare directly; each arm also keeps its per-step losses, which must
agree between packed and padded arms (the same pairs, the same update) up to bf16 rounding.
The JSON is rewritten after every arm, so a run cut short keeps the arms it finished.

    python benchmarks/bench_train_gpu.py --out DIR [--pairs 1024] [--arms zero2_packed,zero2_padded]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ARMS = {  # name -> (ZeRO stage, packing)
    "zero2_packed": (2, True), "zero2_padded": (2, False), "zero3_packed": (3, True), "zero3_padded": (3, False),
}

WORDS = (
    "the model answers a question about data training reward policy human judge score pair "
    "prompt version size matrix round reference gradient loss token batch clip margin sample "
    "correct wrong because therefore however first second finally result value number"
).split()


def text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def build(work: Path, n_pairs: int, hidden: int, layers: int) -> tuple[Path, Path, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tso_train.tiny import train_tokenizer

    rng = random.Random(0)
    corpus = [text(rng, 50) for _ in range(2000)]
    tokenizer = train_tokenizer(corpus, vocab_size=1000)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=hidden, intermediate_size=int(hidden * 8 / 3) // 128 * 128,
        num_hidden_layers=layers, num_attention_heads=hidden // 128, num_key_value_heads=max(1, hidden // 512),
        max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    model_dir = work / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = []
    for i in range(n_pairs):
        rows.append({
            "prompt": [{"role": "user", "content": text(rng, 60)}],
            "chosen": [{"role": "assistant", "content": text(rng, rng.randint(150, 300))}],
            "rejected": [{"role": "assistant", "content": text(rng, rng.randint(150, 300))}],
            "pair_id": f"p{i}", "prompt_id": f"q{i}", "kind": "matrix", "chosen_source": "a",
            "rejected_source": "b", "chosen_score": None, "rejected_score": None, "round": 1,
        })
    table = pa.Table.from_pylist(rows)
    table = table.replace_schema_metadata({
        "tso.schema_version": "1", "tso.snapshot_id": "gpu-bench", "tso.round": "1", "tso.config": "{}",
    })
    snapshot = work / "pairs.parquet"
    pq.write_table(table, snapshot)
    return model_dir, snapshot, n_params


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def run_fit(name: str, model: Path, snapshot: Path, out: Path, zero: int, packing: bool,
            args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, "-m", "tso_train.cli", "fit", str(snapshot), "--model", str(model),
        "--out", str(out / name), "--loss", "dpo", "--parts", "1", "--epochs", "1",
        "--global-batch", str(args.global_batch), "--micro-batch", str(args.micro_batch),
        "--max-length", str(args.max_length), "--zero", str(zero), "--save-every", "100000",
        "--packing" if packing else "--no-packing", *(["--bf16"] if args.bf16 else []),
    ]
    start = time.time()
    log_dir = args.out / "logs"
    log_dir.mkdir(exist_ok=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.arm_timeout)
    except subprocess.TimeoutExpired as exc:
        out_text, err_text = (_text(exc.stdout), _text(exc.stderr))
        (log_dir / f"{name}.log").write_text(out_text[-20000:] + "\n--- stderr ---\n" + err_text[-20000:])
        metrics = out / name / "metrics.jsonl"
        done = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()] if metrics.exists() else []
        return {"arm": name, "ok": False, "zero": zero, "packing": packing, "rc": "timeout",
                "timeout_s": args.arm_timeout, "steps_done": len(done), "step_rows": done, "stderr_tail": err_text[-1500:]}
    wall = time.time() - start
    (log_dir / f"{name}.log").write_text(proc.stdout[-20000:] + "\n--- stderr ---\n" + proc.stderr[-20000:])
    if proc.returncode != 0:
        return {"arm": name, "ok": False, "zero": zero, "packing": packing, "rc": proc.returncode,
                "stderr_tail": proc.stderr[-1500:]}
    rows = [json.loads(l) for l in (out / name / "metrics.jsonl").read_text().splitlines() if l.strip()]
    steady = rows[1:] or rows
    return {
        "arm": name, "ok": True, "zero": zero, "packing": packing, "wall_s": round(wall, 1), "steps": len(rows),
        "first_step_loss": rows[0]["loss"], "first_step_grad_weight": rows[0]["grad_weight"],
        "tokens_per_s": sum(r["tokens_per_s"] for r in steady) / len(steady),
        "peak_mem_gib": max(r["peak_mem"] for r in rows) / 2**30,
        "last_loss": rows[-1]["loss"], "losses": [r["loss"] for r in rows],
    }


def environment() -> dict:
    import torch
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    try:
        import deepspeed

        info["deepspeed"] = deepspeed.__version__
    except ImportError:
        info["deepspeed"] = None
    return info


def compare_packing(arms: list[dict]) -> list[dict]:
    """Packed vs padded arms of the same ZeRO stage: tokens/s ratio, peak memory and the largest
    per-step loss difference (the same update, so only rounding may differ)."""
    ok = {(a["zero"], a["packing"]): a for a in arms if a.get("ok")}
    out = []
    for zero in sorted({z for z, _ in ok}):
        packed, padded = ok.get((zero, True)), ok.get((zero, False))
        if packed and padded:
            out.append({
                "zero": zero,
                "tokens_per_s_packed_over_padded": packed["tokens_per_s"] / padded["tokens_per_s"],
                "peak_mem_gib_packed": packed["peak_mem_gib"], "peak_mem_gib_padded": padded["peak_mem_gib"],
                "max_abs_loss_diff": max(abs(a - b) for a, b in zip(packed["losses"], padded["losses"])),
            })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--arms", default="zero2_packed,zero2_padded,zero3_packed,zero3_padded",
                        help=f"comma-separated, from {', '.join(ARMS)}")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="--no-bf16 for a CPU smoke run of the script")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the card")
    parser.add_argument("--arm-timeout", type=int, default=240)
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {', '.join(unknown)} (choose from {', '.join(ARMS)})")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "tso-gpu-bench"
    shutil.rmtree(work, ignore_errors=True)  # a rerun must not find the last run's --out dirs
    start = time.time()
    model, snapshot, n_params = build(work, args.pairs, args.hidden, args.layers)
    results = {
        "n_params": n_params, "pairs": args.pairs, "build_s": round(time.time() - start, 1),
        "environment": environment(),
        "settings": {k: getattr(args, k) for k in ("global_batch", "micro_batch", "max_length", "bf16", "peak_tflops")},
        "arms": [],
    }
    for name in arms:
        zero, packing = ARMS[name]
        arm = run_fit(name, model, snapshot, work / "runs", zero, packing, args)
        if arm.get("ok"):
            # tokens/s is measured over optimiser steps, which cost 6N FLOPs per token
            # (forward + backward); attention FLOPs are left out, so this MFU is conservative.
            flops_per_token = 6 * n_params
            arm["mfu"] = arm["tokens_per_s"] * flops_per_token / (args.peak_tflops * 1e12)
            arm["first_step_loss_minus_ln2"] = arm["first_step_loss"] - math.log(2)
        results["arms"].append(arm)
        results["packing_vs_padded"] = compare_packing(results["arms"])
        print(json.dumps({k: v for k, v in arm.items() if k != "losses"}), flush=True)
        (args.out / "train_gpu.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results["packing_vs_padded"]), flush=True)


if __name__ == "__main__":
    main()
