"""DPO training throughput on one GPU: `tso-train fit` (ZeRO-2/3, packed or padded micro-batches,
tuning options) beside TRL's DPOTrainer on the same locally built Llama and the same pairs.

Run where a GPU is lent (scripts/gpu_check.sh runs it arm group by arm group in one device call;
see docs/benchmarks.md, "GPU"). Self-contained: nothing is downloaded; the pairs are synthetic text
(throughput and correctness, not quality). Arms are named as benchmarks/gpu_arms.py describes,
e.g. ``z2-packed-0.5b``, ``z2-padded-1.5b-mb16``, ``trl-0.5b``.

Every arm trains DPO at global batch 64 (pairs), maximum length 1024, bf16, one part, one epoch,
for ``--steps`` optimiser steps, and reports:

* ``pairs_per_s`` over steps 2..n (wall time between the ends of steps; step 1 pays for warm-up)
  and ``tokens_per_s`` = pairs/s × real tokens per pair (each engine's own tokenisation);
* ``mfu`` = 6·N FLOPs per trained token / time / ``--peak-tflops`` (N: all parameters; attention
  FLOPs are left out, so it is conservative), and ``mfu_with_reference``, which also counts the
  reference pass (2·N per token, once per epoch) and its time;
* ``peak_mem_gib`` (max allocated, reference pass included) and the first step's loss, which must
  be ln 2 (the reference is the policy at the start).

tso-train arms run in this process one after another (the stopped run is released before the
next); a TRL arm runs in its own process. The JSON (``OUT/train_gpu.json``) is rewritten after
every arm, and a later call with the same ``--out`` adds its arms to it.

    python -m benchmarks.bench_train_gpu --out DIR --arms z2-packed-0.5b,z2-padded-0.5b,trl-0.5b
    python -m benchmarks.bench_train_gpu --out DIR --table     # the table of what DIR holds
    python -m benchmarks.bench_train_gpu --out DIR --arms ... --tiny --no-bf16   # a CPU rehearsal
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.gpu_arms import ArmError, build_data, build_model, parse_arm, run_tso_arm, tokens_per_pair

RESULTS = "train_gpu.json"


def environment() -> dict:
    import torch
    import transformers

    from tso_train.attention import varlen_function

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "varlen_attention": varlen_function() is not None,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    for name in ("deepspeed", "trl", "accelerate", "datasets"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 - a missing package is a fact to record
            info[name] = f"unavailable ({type(exc).__name__})"
    return info


def prepare(args: argparse.Namespace) -> dict:
    """The pairs and tokenizer in the work directory (reused by later calls with the same sizes)."""
    work = args.work
    stamp = work / "data.json"
    wanted = {"pairs": args.pairs, "tiny": args.tiny, "max_length": args.max_length}
    if not stamp.exists() or json.loads(stamp.read_text()).get("wanted") != wanted:
        work.mkdir(parents=True, exist_ok=True)
        snapshot, pairs = build_data(work, args.pairs, args.tiny)
        (work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
        tpp = tokens_per_pair(work / "tokenizer", snapshot, args.max_length)
        stamp.write_text(json.dumps({"wanted": wanted, "tokens_per_pair": tpp}))
    return json.loads(stamp.read_text())


def model_dir(args: argparse.Namespace, size: str, results: dict) -> Path:
    size = "tiny" if args.tiny else size
    path = args.work / f"model-{size}"
    if size not in results["models"]:
        t = time.perf_counter()
        n = build_model(path, size, args.work / "tokenizer")
        results["models"][size] = {"n_params": n, "build_s": round(time.perf_counter() - t, 1)}
    return path


def run_trl_arm(name: str, model: Path, args: argparse.Namespace) -> dict:
    spec = {"arm": name, "model": str(model), "pairs": str(args.work / "pairs.jsonl"), "out": str(args.work / name),
            "global_batch": args.global_batch, "max_length": args.max_length, "steps": args.steps,
            "bf16": args.bf16, "arm_timeout": args.arm_timeout}
    spec_path, result_path = args.work / f"{name}.spec.json", args.work / f"{name}.result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    root = Path(__file__).resolve().parents[1]
    # not the process group this process's tso-train arms started: TRL sets up its own
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.trl_dpo_arm", str(spec_path), str(result_path)],
                              env=env, cwd=root, timeout=args.arm_timeout + 120, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {args.arm_timeout + 120} s"}
    if not result_path.exists():
        return {"ok": False, "error": f"exit status {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
    return json.loads(result_path.read_text())


def derive(arm: dict, n_params: int, tpp: float, args: argparse.Namespace) -> None:
    """tokens/s and MFU from the measured pairs/s and reference-pass time (see the docstring)."""
    if "pairs_per_s" not in arm:
        return
    tpp = arm.get("tokens_per_pair_trl", tpp)
    arm["tokens_per_pair"] = tpp
    arm["tokens_per_s"] = arm["pairs_per_s"] * tpp
    arm["mfu"] = arm["tokens_per_s"] * 6 * n_params / (args.peak_tflops * 1e12)
    if arm.get("reference_s"):
        seconds_per_pair = 1 / arm["pairs_per_s"] + arm["reference_s"] / args.pairs
        arm["tokens_per_s_with_reference"] = tpp / seconds_per_pair
        arm["mfu_with_reference"] = arm["tokens_per_s_with_reference"] * 8 * n_params / (args.peak_tflops * 1e12)


def write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def run_arms(args: argparse.Namespace, names: list[str]) -> None:
    path = args.out / RESULTS
    results = json.loads(path.read_text()) if path.exists() else {
        "environment": environment(), "models": {}, "arms": [],
        "settings": {k: getattr(args, k) for k in ("pairs", "steps", "global_batch", "max_length", "bf16",
                                                   "peak_tflops", "tiny")}}
    data = prepare(args)
    started = time.perf_counter()
    for name in names:
        arm = parse_arm(name)
        left = args.budget - (time.perf_counter() - started) if args.budget else None
        if left is not None and left < args.min_arm_s:
            entry = {"arm": name, "ok": False, "skipped": f"{left:.0f} s of the call's budget left"}
        else:
            t = time.perf_counter()
            model = model_dir(args, arm.size, results)
            built = "tiny" if args.tiny else arm.size
            settings = {"steps": args.steps, "arm_timeout": min(args.arm_timeout, left or args.arm_timeout),
                        "global_batch": args.global_batch, "max_length": args.max_length, "bf16": args.bf16}
            outcome = run_trl_arm(name, model, args) if arm.is_trl else run_tso_arm(arm, model,
                                                                                    args.work / "pairs.parquet",
                                                                                    args.work / "runs", settings)
            entry = {"arm": name, "size": arm.size, "model": built, **outcome,
                     "wall_s": round(time.perf_counter() - t, 1)}
            derive(entry, results["models"][built]["n_params"], data["tokens_per_pair"], args)
        results["arms"].append(entry)
        write_atomic(path, results)
        print(json.dumps({k: v for k, v in entry.items() if k not in ("losses", "traceback_tail")}), flush=True)


COLUMNS = ("arm", "steps", "pairs_per_s", "tokens_per_s", "mfu", "mfu_with_reference", "peak_mem_gib",
           "first_step_loss_minus_ln2")


def table(results: dict) -> str:
    """One line per arm, then each size's best tso-train ZeRO-2 arm against TRL."""
    lines = ["  ".join(f"{c:>14}" if i else f"{c:<28}" for i, c in enumerate(COLUMNS))]
    for a in results["arms"]:
        cells = [a["arm"]] + [a.get(c) for c in COLUMNS[1:]]
        text = [f"{v:<28}" if i == 0 else (f"{v:>14.4g}" if isinstance(v, float) else f"{v!s:>14}")
                for i, v in enumerate(cells)]
        line = "  ".join(text)
        lines.append(line if a.get("ok") else f"{line}  FAILED: {a.get('error') or a.get('skipped', '')[:120]}")
    for summary in versus_trl(results["arms"]):
        lines.append(json.dumps(summary))
    return "\n".join(lines)


def versus_trl(arms: list[dict]) -> list[dict]:
    out = []
    for size in sorted({a.get("size") for a in arms if a.get("ok")} - {None}):
        ok = [a for a in arms if a.get("ok") and a.get("size") == size and "tokens_per_s" in a]
        trl = [a for a in ok if a["arm"].startswith("trl-") and a["arm"].count("-") == 1]
        tso = [a for a in ok if a["arm"].startswith("z2-")]
        if trl and tso:
            best = max(tso, key=lambda a: a["tokens_per_s"])
            out.append({"size": size, "best_tso_arm": best["arm"], "trl_arm": trl[0]["arm"],
                        "tokens_per_s_over_trl": best["tokens_per_s"] / trl[0]["tokens_per_s"],
                        "peak_mem_over_trl": best["peak_mem_gib"] / trl[0]["peak_mem_gib"]
                        if trl[0]["peak_mem_gib"] else None})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arms", default="", help="comma-separated arm names (benchmarks/gpu_arms.py)")
    parser.add_argument("--table", action="store_true", help="print the table of OUT's results and stop")
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps per arm (at most pairs/global batch)")
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--tiny", action="store_true", help="a tiny model and short pairs whatever the arm's size")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the card")
    parser.add_argument("--arm-timeout", type=float, default=150, help="seconds of training per arm")
    parser.add_argument("--budget", type=float, default=0, help="seconds for this call's arms (0: no limit)")
    parser.add_argument("--min-arm-s", type=float, default=25, help="an arm starts only with this much budget left")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "tso-gpu-bench")
    args = parser.parse_args(argv)
    if args.table:
        path = args.out / RESULTS
        print(table(json.loads(path.read_text())) if path.exists() else f"no {path}")
        return 0
    names = [a.strip() for a in args.arms.split(",") if a.strip()]
    try:
        for name in names:
            parse_arm(name)
    except ArmError as exc:
        parser.error(f"--arms: {exc}")
    if not names:
        parser.error("--arms: name at least one arm (or --table)")
    if args.steps < 2 or args.steps * args.global_batch > args.pairs:
        parser.error(f"--steps {args.steps}: must be ≥ 2 and ≤ pairs / global batch "
                     f"({args.pairs // args.global_batch})")
    args.out.mkdir(parents=True, exist_ok=True)
    run_arms(args, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
