"""A CPU fit as a user runs it, timed as a whole process from start to exit: `tso-train fit`
(the console script) vs a TRL DPOTrainer script doing the same job, and a tiny fit's start-up.

* ``tso``  ``tso-train fit SNAP --model M --out O --loss dpo --parts 1 --epochs 1 --global-batch 8
           --max-length 256`` (default micro-batch, learning rate 1e-6, saves the policy)
* ``trl``  a script: load the model, tokenizer and Parquet pairs, DPOTrainer (sigmoid loss, batch 8,
           max length 256, one epoch, lr 1e-6, fp32 on CPU as FACTS.md says), train, save_model

Both read the same locally built ~11M-parameter Llama (hidden 384, 6 layers) and the same hh-rlhf
pairs. Start-up (imports, model load, tokenisation, DeepSpeed start) counts: that is what a user
waits for. The arms run alternately (tso, trl, then trl, tso, …), each in a fresh process; the
ratio of medians and each round's ratio are reported, with the load average, since other jobs on
the machine move the numbers (measure on a quiet machine before quoting them).

Start-up: a one-step fit of a tiny Llama (hidden 64, 2 layers), whole process, run twice (the second
on a warm environment; target: training starts within 15 s, so the whole one-step process must
take ≤ 15 s).

    python -m benchmarks.bench_train_process                 # 256 pairs, 3 rounds
    python -m benchmarks.bench_train_process --small         # 64 pairs, 1 round: a quick check
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

from benchmarks.results_file import write_result

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "train_process.json"


def trl_job(snapshot: str, model_dir: str, out: str, batch: int, max_length: int) -> None:
    """What a TRL user writes for this job (the `trl` arm's process runs only this)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pairs = datasets.load_dataset("parquet", data_files=snapshot,
                                  split="train").select_columns(["prompt", "chosen", "rejected"])
    args = DPOConfig(output_dir=out, per_device_train_batch_size=batch, num_train_epochs=1, learning_rate=1e-6,
                     max_length=max_length, bf16=False, use_cpu=True, report_to="none", save_strategy="no", beta=0.1)
    trainer = DPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(f"{out}/final")


def tso_command(snapshot: str, model_dir: str, out: str, batch: int, max_length: int, parts: int = 1) -> list[str]:
    script = Path(sys.executable).with_name("tso-train")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "tso_train.cli"]
    return [*head, "fit", snapshot, "--model", model_dir, "--out", out, "--loss", "dpo", "--parts", str(parts),
            "--epochs", "1", "--global-batch", str(batch), "--max-length", str(max_length)]


def timed(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` to completion: wall seconds from start to exit, the process's CPU seconds (less
    swayed by other jobs than wall time, though not immune) and its peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} … failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_bytes": usage.ru_maxrss * 1024,
            "load_avg_1m": os.getloadavg()[0],
            "stdout_tail": stdout.strip().splitlines()[-1:] or [""]}


def start_up(work: Path, env: dict) -> list[float]:
    """Whole-process seconds of a one-step fit (8 pairs) of a tiny Llama (hidden 64, 2 layers), twice."""
    from benchmarks.bench_train import build_inputs

    (work / "tiny").mkdir()
    tiny = build_inputs(work / "tiny", 8, 64, 2)
    return [timed(tso_command(tiny["snapshot"], tiny["model"], str(work / f"tiny-run-{i}"), 8, 256), env)["seconds"]
            for i in range(2)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--small", action="store_true", help="64 pairs, one round")
    p.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(ROOT)}")
    p.add_argument("--trl-job", nargs=3, metavar=("SNAPSHOT", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.trl_job:
        trl_job(*args.trl_job, batch=args.batch, max_length=args.max_length)
        return
    if args.small:
        args.pairs, args.rounds = 64, 1

    from rich.console import Console
    from rich.table import Table

    from benchmarks.bench_train import build_inputs
    from tso_train.console import quiet_third_party
    from tso_train.engine import prepare_deepspeed_import

    quiet_third_party()  # building the inputs loads transformers (and through it DeepSpeed) here
    prepare_deepspeed_import()

    console = Console(width=120)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    with tempfile.TemporaryDirectory(prefix="bench-train-process-") as tmp:
        work = Path(tmp)
        env["HF_DATASETS_CACHE"] = str(work / "hf-datasets")  # TRL's tokenised cache starts cold, as for a new job
        starts = start_up(work, env)
        console.print(f"tiny one-step fit, whole process: {starts[0]:.1f} s, then {starts[1]:.1f} s (warm)")
        inputs = build_inputs(work, args.pairs, 384, 6)
        console.print(f"model {inputs['n_params'] / 1e6:.1f}M params, {inputs['n_pairs']} pairs, batch {args.batch}, "
                      f"max length {args.max_length}, one epoch, fp32, CPU")
        runs: dict[str, list[dict]] = {"tso": [], "trl": []}
        for round_ in range(args.rounds):
            for arm in (("tso", "trl") if round_ % 2 == 0 else ("trl", "tso")):
                out = str(work / f"out-{arm}-{round_}")
                cmd = (tso_command(inputs["snapshot"], inputs["model"], out, args.batch, args.max_length)
                       if arm == "tso" else
                       [sys.executable, "-m", "benchmarks.bench_train_process", "--batch", str(args.batch),
                        "--max-length", str(args.max_length), "--trl-job", inputs["snapshot"], inputs["model"], out])
                r = timed(cmd, env)
                runs[arm].append(r)
                console.print(f"round {round_ + 1} {arm}: {r['seconds']:.1f} s start to exit "
                              f"({r['cpu_seconds']:.0f} CPU s), peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB, "
                              f"load {r['load_avg_1m']:.1f}")
    median = {arm: statistics.median(r["seconds"] for r in rs) for arm, rs in runs.items()}
    per_round = [t["seconds"] / s["seconds"] for s, t in zip(runs["tso"], runs["trl"])]
    table = Table(title="Whole process, start to exit: tso-train fit vs a TRL DPOTrainer script (CPU, fp32)")
    cpu = {arm: statistics.median(r["cpu_seconds"] for r in rs) for arm, rs in runs.items()}
    for col in ("arm", "runs (s)", "median s", "median CPU s", "peak RSS GiB", "TRL ÷ tso (wall, CPU)"):
        table.add_column(col, justify="right")
    for arm, rs in runs.items():
        table.add_row(arm, ", ".join(f"{r['seconds']:.1f}" for r in rs), f"{median[arm]:.1f}", f"{cpu[arm]:.0f}",
                      f"{max(r['peak_rss_bytes'] for r in rs) / 2**30:.2f}",
                      f"{median['trl'] / median['tso']:.2f}, {cpu['trl'] / cpu['tso']:.2f}" if arm == "tso" else "")
    console.print(table)
    targets = {"whole_process_vs_trl_ge_1.3": median["trl"] / median["tso"] >= 1.3,
               "tiny_start_le_15s": starts[1] <= 15.0}
    console.print(f"per-round TRL ÷ tso: {', '.join(f'{x:.2f}' for x in per_round)}; targets: {targets}")
    report = {"settings": {"pairs": args.pairs, "batch": args.batch, "max_length": args.max_length,
                           "params": inputs["n_params"],
                           "rounds": args.rounds, "cores": os.cpu_count()},
              "tiny_start_seconds": starts, "runs": runs, "median_seconds": median, "median_cpu_seconds": cpu,
              "ratio_trl_over_tso": median["trl"] / median["tso"], "per_round_ratio": per_round, "targets_met": targets}
    if not args.no_write:
        write_result(RESULTS, report)


if __name__ == "__main__":
    main()
