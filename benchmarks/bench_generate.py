"""Generation throughput, side by side with its ideal / baseline, in one run.

1. openai backend: the whole `generate` job (plan, requests, shards, merge) against a
   local OpenAI-compatible stub server (separate process, fixed 100 ms latency, trivial
   text). Achieved requests/s against the ideal concurrency / latency at 16, 64 and 256
   in flight; catalog writes (shard flushes + merge) as a share of wall time.
   Targets (2 cores): >= 90 % of ideal at 64, >= 70 % at 256, writes <= 5 % of wall time.
2. transformers backend: the whole job's tokens/s on a small local model against a plain
   batched ``model.generate`` loop over the same prompts (same batch size, greedy, same
   max new tokens). Target: ratio >= 0.9.

    python -m benchmarks.bench_generate            # full size
    python -m benchmarks.bench_generate --small    # quick

Requests go to 127.0.0.1 only; every run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.results_file import write_result
from tso_data.catalog import Catalog
from tso_data.generate.backend import SamplingParams
from tso_data.generate.factory import BackendOptions, get_backend
from tso_data.generate.job import run_generation
from tso_data.generate.plan import GenerateSpec, plan_generation
from tso_data.ids import prompt_id
from tso_data.matrix import add_model, get_model

RESULTS = Path(__file__).resolve().parent / "results" / "generate.json"
LATENCY_S = 0.1


def _add_prompts(catalog: Catalog, texts: list[str]) -> None:
    import pyarrow as pa

    rows = [{"prompt_id": prompt_id([{"role": "user", "content": t}]), "messages": [{"role": "user", "content": t}],
             "n_turns": 1, "split": "train"} for t in texts]
    table = pa.Table.from_pylist(rows)
    with catalog.connect(read_only=False) as con:
        con.register("bench_prompts", table)
        con.execute("INSERT INTO prompts (prompt_id, messages, n_turns, split, source, added_at) "
                    "SELECT prompt_id, messages, n_turns, split, 'bench', now() FROM bench_prompts")


def _children_cpu_s(server_pid: int) -> float:
    """CPU seconds of this process's live child processes but the server (the client processes)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        if child.pid == server_pid:
            continue
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _start_stub() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tso_data.generate.stub_server", "--port", "0", "--latency", str(LATENCY_S)],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"stub server did not start: {line!r}")
    return proc, line.split()[1]


def bench_openai(levels: list[int], rounds: int, console: Console,
                 client_processes: int | None = None) -> list[dict[str, object]]:
    proc, base_url = _start_stub()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            catalog = Catalog.init(Path(tmp) / "catalog")
            n_prompts = max(levels) * rounds
            _add_prompts(catalog, [f"benchmark question {i}" for i in range(n_prompts)])
            for concurrency in levels:
                name = f"bench-c{concurrency}"
                add_model(catalog, name, family="bench", version="1", size_b=1, endpoint=base_url)
                total = concurrency * rounds
                spec = GenerateSpec(model=name, params=SamplingParams(max_tokens=16),
                                    where=f"prompt_id IN (SELECT prompt_id FROM prompts ORDER BY prompt_id "
                                          f"LIMIT {total})")
                plan = plan_generation(catalog, spec)
                startup = time.monotonic()
                backend = get_backend(get_model(catalog, name), BackendOptions(concurrency=concurrency,
                                                                               client_processes=client_processes,
                                                                               no_api_key=True))
                backend.start()  # client processes up and preflight done: timed apart, reported below
                startup_s = time.monotonic() - startup
                processes = backend.settings.processes
                children_cpu = _children_cpu_s(proc.pid)
                started, cpu_started = time.monotonic(), time.process_time()
                result = run_generation(catalog, plan, backend, flush_every=1000, flush_seconds=30, progress=False)
                wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
                parent_cpu = cpu
                cpu += _children_cpu_s(proc.pid) - children_cpu
                backend.close()
                stored = catalog.scalar("SELECT count(*) FROM responses WHERE model = ?", [name])
                ideal = concurrency / LATENCY_S
                achieved = total / wall
                writes = result.run.flush_s + result.merge_s
                rows.append({
                    "concurrency": concurrency, "requests": total, "stored": stored, "wall_s": round(wall, 3),
                    "achieved_rps": round(achieved, 1), "ideal_rps": round(ideal, 1),
                    "ratio": round(achieved / ideal, 3), "client_processes": processes,
                    "startup_s": round(startup_s, 3),
                    "ratio_including_startup": round(total / (wall + startup_s) / ideal, 3),
                    "catalog_write_s": round(writes, 3),
                    "catalog_write_share": round(writes / wall, 4), "flush_s": round(result.run.flush_s, 3),
                    "flushes": result.run.flushes, "merge_s": round(result.merge_s, 3),
                    "client_cpu_ms_per_request": round(cpu * 1000 / total, 3),
                    "parent_cpu_ms_per_request": round(parent_cpu * 1000 / total, 3), "failed": result.run.failed,
                })
                console.print(f"openai c={concurrency} ({processes} client process{'es' if processes > 1 else ''}, "
                              f"start-up {startup_s:.2f} s): {achieved:.0f} req/s of {ideal:.0f} ideal "
                              f"({achieved / ideal:.0%}), writes {writes / wall:.1%} of {wall:.2f} s "
                              f"(flush {result.run.flush_s:.2f} s x{result.run.flushes}, "
                              f"merge {result.merge_s:.2f} s), client CPU {cpu * 1000 / total:.2f} ms/req "
                              f"({parent_cpu * 1000 / total:.2f} in this process)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


def bench_transformers(n_prompts: int, batch_size: int, max_tokens: int, repeats: int,
                       console: Console, device: str = "cpu") -> dict[str, object]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tso_train.tiny import build_tiny_causal_lm

    torch.set_num_threads(1)  # steadier than 2 threads on cores other processes share
    size = dict(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2)
    if device != "cpu":
        size = dict(hidden_size=1024, num_layers=8, num_heads=16, num_kv_heads=4)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_causal_lm(Path(tmp) / "model", seed=0, **size)
        texts = [f"Explain step {i}: " + "the quick brown fox jumps over the lazy dog " * (1 + i % 4)
                 for i in range(n_prompts)]
        conversations = [[{"role": "user", "content": t}] for t in texts]

        # baseline: a plain batched generate loop, left padding, greedy
        tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()

        def plain_loop() -> tuple[int, float]:
            tokens = 0
            started = time.monotonic()
            for i in range(0, n_prompts, batch_size):
                chunk = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                         for c in conversations[i : i + batch_size]]
                enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                with torch.inference_mode():
                    out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False,
                                         pad_token_id=tokenizer.pad_token_id)
                new = out[:, enc["input_ids"].shape[1] :]
                tokens += int((new != tokenizer.pad_token_id).sum())
            if device != "cpu":
                torch.cuda.synchronize()
            return tokens, time.monotonic() - started

        def job(round_: int) -> tuple[int, float, float]:
            catalog = Catalog.init(Path(tmp) / f"catalog-{round_}")
            _add_prompts(catalog, texts)
            add_model(catalog, "small-v1-0.01b", family="small", version="1", size_b=0.01, path=str(model_dir))
            spec = GenerateSpec(model="small-v1-0.01b", params=SamplingParams(temperature=0.0, max_tokens=max_tokens))
            plan = plan_generation(catalog, spec)
            # the same order as the baseline: prompts in the order given
            order = {prompt_id(c): i for i, c in enumerate(conversations)}
            plan.todo.sort(key=lambda conv: order[conv.prompt_id])
            backend = get_backend(get_model(catalog, "small-v1-0.01b"),
                                  BackendOptions(device=device, batch_size=batch_size))
            started = time.monotonic()
            result = run_generation(catalog, plan, backend, flush_every=512, flush_seconds=30, progress=False)
            wall = time.monotonic() - started
            return result.run.completion_tokens, wall, result.run.flush_s + result.merge_s

        plain_loop()  # warm-up (allocator, kernels)
        ratios: list[float] = []
        plain_rates: list[float] = []
        job_rates: list[float] = []
        job_tokens = plain_tokens = 0
        writes = 0.0
        for r in range(repeats):
            # back-to-back pairs in alternating order, median of the pair ratios: the cores
            # are shared, and a pair sees about the same load
            if r % 2 == 0:
                plain_tokens, plain_wall = plain_loop()
                job_tokens, job_wall, writes = job(r)
            else:
                job_tokens, job_wall, writes = job(r)
                plain_tokens, plain_wall = plain_loop()
            plain_rates.append(plain_tokens / plain_wall)
            job_rates.append(job_tokens / job_wall)
            ratios.append(job_rates[-1] / plain_rates[-1])
        ratio = statistics.median(ratios)
        baseline_best, job_best = statistics.median(plain_rates), statistics.median(job_rates)
        row = {
            "prompts": n_prompts, "batch_size": batch_size, "max_new_tokens": max_tokens, "repeats": repeats,
            "plain_tokens": plain_tokens, "job_tokens": job_tokens,
            "plain_tokens_per_s": round(baseline_best, 1), "job_tokens_per_s": round(job_best, 1),
            "ratio": round(ratio, 3), "pair_ratios": [round(x, 3) for x in ratios],
            "catalog_write_s": round(writes, 3), "torch_threads": torch.get_num_threads(), "device": device,
            "model": size,
        }
        console.print(f"transformers: job {job_best:.0f} tok/s vs plain generate {baseline_best:.0f} tok/s "
                      f"(median pair ratio {ratio:.2f}: {', '.join(f'{x:.2f}' for x in ratios)})")
        return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="fewer requests and prompts (quick check)")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--transformers-only", action="store_true")
    parser.add_argument("--device", default="cpu", help="transformers part: cpu or cuda (a larger model on cuda)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--client-processes", type=int, default=None, help="openai part: default one per 32 in flight")
    parser.add_argument("--levels", default="16,64,256", help="openai part: concurrency levels")
    args = parser.parse_args(argv)
    console = Console(width=160)
    load_before = os.getloadavg()[0]
    rounds = 10 if args.small else 50
    levels = [int(x) for x in args.levels.split(",")]
    openai_rows = [] if args.transformers_only else bench_openai(levels, rounds, console, args.client_processes)
    tf_row = None
    if not args.skip_transformers:
        if args.device == "cpu":
            tf_row = bench_transformers(n_prompts=32 if args.small else 96, batch_size=16,
                                        max_tokens=16 if args.small else 32, repeats=3 if args.small else 5,
                                        console=console)
        else:
            tf_row = bench_transformers(n_prompts=256, batch_size=64, max_tokens=64, repeats=5, console=console,
                                        device=args.device)

    table = Table(title="bench_generate" + (" (--small)" if args.small else "")
                  + f" — {os.cpu_count()} cores, load average {load_before:.1f} at start")
    for col in ("case", "measured", "baseline / ideal", "ratio", "target", "catalog writes", "met"):
        table.add_column(col)
    targets = {64: 0.9, 256: 0.7}
    verdicts = []
    for row in openai_rows:
        target = targets.get(int(row["concurrency"]))
        met = (target is None or row["ratio"] >= target) and row["catalog_write_share"] <= 0.05 \
            and row["stored"] == row["requests"]
        verdicts.append(met)
        table.add_row(f"openai c={row['concurrency']} ({row['requests']} req, {row['client_processes']} proc)",
                      f"{row['achieved_rps']} req/s",
                      f"{row['ideal_rps']} req/s", f"{row['ratio']:.1%}", f">= {target:.0%}" if target else "-",
                      f"{row['catalog_write_share']:.1%} (<= 5%)", "yes" if met else "NO")
    if tf_row is not None:
        met = tf_row["ratio"] >= 0.9
        verdicts.append(met)
        table.add_row(f"transformers {tf_row['device']} ({tf_row['prompts']} prompts, bs {tf_row['batch_size']})",
                      f"{tf_row['job_tokens_per_s']} tok/s", f"{tf_row['plain_tokens_per_s']} tok/s",
                      f"{tf_row['ratio']:.2f}", ">= 0.90", f"{tf_row['catalog_write_s']} s", "yes" if met else "NO")
    console.print(table)
    payload = {
        "benchmark": "generate",
        "scale": "small" if args.small else "full",
        "cpu_count": os.cpu_count(),
        "load_average_1m_before": round(load_before, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "latency_s": LATENCY_S,
        "openai": openai_rows,
        "transformers": tf_row,
        "all_targets_met": all(verdicts),
    }
    write_result(args.out, payload)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
