"""tso-train fit (loss dpo, one part) vs TRL's DPOTrainer, side by side in one run.

Same locally built Llama, same hh-rlhf pairs, batch, max length, fp32, number of steps (one
pass over the pairs). Three arms, each in its own subprocess so peak RSS is its own:

* ``tso``            `tso-train fit --loss dpo --parts 1 --epochs 1` at its default micro-batch
                     (4 pairs on average, accumulated to the global batch; padding-free packed
                     micro-batches of balanced token totals; reference log-probs computed once by
                     the policy; no reference model in memory)
* ``tso_mb8``        the same with micro-batch = the global batch (no accumulation), like TRL:
                     the same compute (packing leaves no padding to save), twice the activations
* ``trl``            TRL DPOTrainer with its defaults (per-device batch 8 = the global batch, a
                     second model copy as reference)
* ``trl_precompute`` TRL with ``precompute_ref_log_probs=True``

Throughput is measured over training proper: TRL's ``trainer.train()`` (its reference
precompute included) vs tso-train's reference passes + optimiser steps (engine start-up,
tokenisation and saving excluded for both; TRL's tokenisation happens in its constructor).
The end-to-end seconds (model load to trained model) are reported too. Tokens = non-pad tokens
of chosen + rejected sequences of the trained pairs under the model's chat template (the same
count for every arm).

    python -m benchmarks.bench_train --pairs 64   # the recorded run: 8 steps, ~11M-param Llama
    python -m benchmarks.bench_train            # 512 pairs (> 10 min per arm on 2 shared cores)
    python -m benchmarks.bench_train --pairs 2000
    python -m benchmarks.bench_train --small    # 64 pairs, ~1M params: a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results_file import write_result

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TSO_SHARED_DATA") or ROOT.parent / "shared" / "data")
RESULTS = ROOT / "benchmarks" / "results" / "train.json"
ARMS = ("tso", "tso_mb8", "trl", "trl_precompute")


def build_inputs(work: Path, pairs: int, hidden: int, layers: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tso_train.tiny import build_tiny_causal_lm

    rows, corpus = [], []
    with (SHARED / "hh_rlhf" / "harmless_base_test.jsonl").open() as f:
        for line in f:
            r = json.loads(line)
            msgs = r["prompt_messages"]
            if r["chosen_response"] == r["rejected_response"]:
                continue
            corpus += [m["content"] for m in msgs] + [r["chosen_response"], r["rejected_response"]]
            rows.append({"prompt": msgs[:1],
                         "chosen": msgs[1:] + [{"role": "assistant", "content": r["chosen_response"]}],
                         "rejected": msgs[1:] + [{"role": "assistant", "content": r["rejected_response"]}],
                         "pair_id": r["pair_id"], "prompt_id": r["pair_id"], "kind": "base",
                         "chosen_source": "human", "rejected_source": "human",
                         "chosen_score": None, "rejected_score": None, "round": 1})
            if len(rows) == pairs:
                break
    msg = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema([("prompt", msg), ("chosen", msg), ("rejected", msg), ("pair_id", pa.string()),
                        ("prompt_id", pa.string()), ("kind", pa.string()), ("chosen_source", pa.string()),
                        ("rejected_source", pa.string()), ("chosen_score", pa.float64()),
                        ("rejected_score", pa.float64()), ("round", pa.int64())])
    table = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(
        {"tso.schema_version": "1", "tso.snapshot_id": "bench", "tso.round": "1", "tso.config": "{}"})
    snapshot = work / "pairs.parquet"
    pq.write_table(table, snapshot)
    model = build_tiny_causal_lm(work / "model", corpus=corpus[:20000], vocab_size=4000, hidden_size=hidden,
                                 num_layers=layers, num_heads=max(4, hidden // 64), num_kv_heads=max(2, hidden // 128),
                                 intermediate_size=hidden * 8 // 3, seed=0)
    from transformers import AutoModelForCausalLM

    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())
    return {"snapshot": str(snapshot), "model": str(model), "n_pairs": len(rows), "n_params": n_params}


def count_tokens(model: str, snapshot: str, max_length: int, n_pairs: int) -> int:
    from transformers import AutoTokenizer

    from tso_train.data import encode_pairs
    from tso_train.snapshot import read_snapshot

    tok = AutoTokenizer.from_pretrained(model)
    enc = encode_pairs(tok, read_snapshot(snapshot).pairs[:n_pairs], max_length)
    return sum(p.n_tokens for p in enc.pairs)


def run_arm(arm: str, args: argparse.Namespace) -> dict:
    """Inside the arm's own process."""
    import torch

    torch.manual_seed(0)
    out = Path(args.work) / f"out-{arm}-{time.time_ns()}"
    t0 = time.perf_counter()
    if arm in ("tso", "tso_mb8"):
        from tso_train.loop import FitConfig, fit

        summary = fit(FitConfig(snapshot=args.snapshot, model=args.model, out=str(out), loss="dpo", parts=1, epochs=1,
                                global_batch=args.batch, micro_batch=4 if arm == "tso" else args.batch, lr=1e-6,
                                max_length=args.max_length,
                                save_every=0, warmup_ratio=0.0))
        steps = summary["steps"]
        train_seconds = summary["train_seconds"]
    else:
        import datasets
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import DPOConfig, DPOTrainer

        model = AutoModelForCausalLM.from_pretrained(args.model)
        tok = AutoTokenizer.from_pretrained(args.model)
        ds = datasets.load_dataset("parquet", data_files=args.snapshot, split="train").select_columns(
            ["prompt", "chosen", "rejected"])
        cfg = DPOConfig(output_dir=str(out), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                        num_train_epochs=1, learning_rate=1e-6, max_length=args.max_length, bf16=False, use_cpu=True,
                        report_to="none", save_strategy="no", logging_steps=10**6, seed=43, beta=0.1,
                        precompute_ref_log_probs=arm == "trl_precompute", dataloader_drop_last=True,
                        dataset_num_proc=None, lr_scheduler_type="cosine")
        trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
        t_train = time.perf_counter()
        result = trainer.train()
        train_seconds = time.perf_counter() - t_train
        steps = result.global_step
    elapsed = time.perf_counter() - t0
    return {"arm": arm, "seconds": elapsed, "train_seconds": train_seconds, "steps": steps,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--rounds", type=int, default=2, help="runs per arm (fastest kept)")
    p.add_argument("--small", action="store_true", help="64 pairs, hidden 128, 2 layers")
    p.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/train.json")
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--snapshot", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.arm:  # child process
        print("RESULT " + json.dumps(run_arm(args.arm, args)), flush=True)
        return
    if args.small:
        args.pairs, args.hidden, args.layers = 64, 128, 2

    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "packages/tso-train/src"), os.environ.get("PYTHONPATH", "")])}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        inputs = build_inputs(Path(work), args.pairs, args.hidden, args.layers)
        n_train = (inputs["n_pairs"] // args.batch) * args.batch
        tokens = count_tokens(inputs["model"], inputs["snapshot"], args.max_length, inputs["n_pairs"])
        # every arm trains on the first n_train pairs of its own shuffle; use the mean per pair
        tokens_trained = tokens * n_train / inputs["n_pairs"]
        console.print(f"model {inputs['n_params'] / 1e6:.1f}M params, {inputs['n_pairs']} pairs, batch {args.batch}, "
                      f"max length {args.max_length}, fp32, {n_train // args.batch} steps")
        results: dict[str, dict] = {}
        # The 2 cores are shared: load swings by 3x within minutes. Each arm runs --rounds times,
        # in an order reversed every round, and keeps its fastest run (and its largest peak RSS).
        for round_ in range(args.rounds):
            for arm in (ARMS if round_ % 2 == 0 else tuple(reversed(ARMS))):
                cmd = [sys.executable, "-m", "benchmarks.bench_train", "--arm", arm, "--work", work,
                       "--snapshot", inputs["snapshot"], "--model", inputs["model"], "--batch", str(args.batch),
                       "--max-length", str(args.max_length)]
                proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    console.print(f"[red]{arm} failed[/red]\n{proc.stderr[-3000:]}")
                    raise SystemExit(1)
                r = json.loads(line[-1][len("RESULT "):])
                r["tokens_per_s"] = tokens_trained / r["train_seconds"]
                r["load_avg_1m"] = os.getloadavg()[0]
                console.print(f"round {round_ + 1} {arm}: {r['train_seconds']:.1f} s training, "
                              f"{r['seconds']:.1f} s end to end, {r['steps']} steps, "
                              f"peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB, load {r['load_avg_1m']:.1f}")
                best = results.get(arm)
                if best is None:
                    results[arm] = {**r, "runs": [r]}
                else:
                    runs = best["runs"] + [r]
                    fastest = min(runs, key=lambda x: x["train_seconds"])
                    results[arm] = {**fastest, "peak_rss_bytes": max(x["peak_rss_bytes"] for x in runs), "runs": runs}

    base = results["trl"]
    table = Table(title="tso-train fit vs TRL DPOTrainer (CPU, fp32)")
    for col in ("arm", "micro", "steps", "train s", "end-to-end s", "tokens/s", "× TRL tokens/s", "peak RSS GiB",
                "× TRL RSS"):
        table.add_column(col, justify="right")
    for arm, r in results.items():
        table.add_row(arm, "4" if arm == "tso" else str(args.batch), str(r["steps"]), f"{r['train_seconds']:.1f}",
                      f"{r['seconds']:.1f}", f"{r['tokens_per_s']:.0f}",
                      f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}", f"{r['peak_rss_bytes'] / 2**30:.2f}",
                      f"{r['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}")
    console.print(table)
    tso, pre = results["tso"], results["trl_precompute"]
    targets = {
        "throughput_vs_trl_ge_1.3": tso["tokens_per_s"] / base["tokens_per_s"] >= 1.3,
        "peak_rss_vs_trl_le_0.7": tso["peak_rss_bytes"] / base["peak_rss_bytes"] <= 0.7,
        "not_worse_than_trl_precompute": tso["tokens_per_s"] >= pre["tokens_per_s"]
        and tso["peak_rss_bytes"] <= pre["peak_rss_bytes"],
    }
    console.print(targets)
    report = {"settings": {"pairs": inputs["n_pairs"], "batch": args.batch, "max_length": args.max_length,
                           "params": inputs["n_params"], "hidden": args.hidden, "layers": args.layers,
                           "precision": "fp32", "device": "cpu", "cores": os.cpu_count(), "small": args.small,
                           "rounds": args.rounds},
              "results": results,
              "ratios_vs_trl": {a: {"tokens_per_s": r["tokens_per_s"] / base["tokens_per_s"],
                                    "peak_rss": r["peak_rss_bytes"] / base["peak_rss_bytes"]}
                                for a, r in results.items()},
              "targets_met": targets}
    if not args.no_write:
        write_result(RESULTS, report)


if __name__ == "__main__":
    main()
