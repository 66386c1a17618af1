"""Run every CPU benchmark in turn (`make bench`), each printing its table and writing
benchmarks/results/<area>.json.

    python -m benchmarks.run_all            # quick sizes (--small): minutes
    python -m benchmarks.run_all --full     # the issue sizes: about an hour on 2 cores
    python -m benchmarks.run_all ingest build

The GPU benchmark (bench_train_gpu.py) is not included: run it where a GPU is lent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

AREAS = ("ingest", "generate", "judge", "build", "train", "train_process", "eval")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("areas", nargs="*", metavar="AREA", help=f"any of {', '.join(AREAS)} (default: all)")
    parser.add_argument("--full", action="store_true", help="issue sizes instead of --small")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.areas) - set(AREAS))
    if unknown:
        parser.error(f"unknown area(s) {', '.join(unknown)}; choose from {', '.join(AREAS)}")
    failed = []
    for area in args.areas or AREAS:
        cmd = [sys.executable, "-m", f"benchmarks.bench_{area}"] + ([] if args.full else ["--small"])
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(area)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
