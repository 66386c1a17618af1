"""Where `tso-data build`'s time goes: one in-process run of bench_build's tso arm, with each
stage of pair building timed: wall time, the process's CPU time (every thread) and its page
faults while the stage ran.

Stages overlap where the build runs them on threads (the two kinds' draws; pair ids beside
the texts; the writer beside the conversations and the snapshot id), so their rows do not add
up; the three phases (inputs, pairs, snapshot) do. CPU time and page faults barely move with
the machine's load, unlike wall time: compare two codes by them when other work shares the
cores, and by wall time only on a quiet machine. On a VM every fresh page of memory is a fault
that costs several microseconds, so the faults show what the build's peak memory costs.

``python -m benchmarks.build_stages [--scale 1.0] [--dir DIR]``: DIR keeps the generated
inputs between runs (they are made once), so runs of two checkouts can alternate on the same
inputs. Prints a table; writes nothing else.
"""

from __future__ import annotations

import argparse
import functools
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.bench_build import FULL_PROMPTS, generate, run_tso


def _usage() -> tuple[float, float, int]:
    """(wall, CPU of every thread, minor page faults) of this process now."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime, usage.ru_minflt


class StageClock:
    """Totals per stage of (calls, wall, CPU, page faults), fed by wrapped functions."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}
        self.order: list[str] = []

    def wrap(self, owner: ModuleType | type, name: str, stage: str) -> None:
        """Replace ``owner.name`` by a version that adds its cost to ``stage`` (rows print in
        the order of the calls to wrap)."""
        self.totals.setdefault(stage, [0, 0.0, 0.0, 0])
        self.order.append(stage)
        function = getattr(owner, name)
        is_classmethod = isinstance(owner, type) and isinstance(owner.__dict__.get(name), classmethod)
        plain: Callable[..., Any] = function.__func__ if is_classmethod else function

        @functools.wraps(plain)
        def timed(*args: Any, **kwargs: Any) -> Any:
            before = _usage()
            try:
                return plain(*args, **kwargs)
            finally:
                self.add(stage, before, _usage())

        setattr(owner, name, classmethod(timed) if is_classmethod else timed)

    def add(self, stage: str, before: tuple[float, float, int], after: tuple[float, float, int]) -> None:
        total = self.totals[stage]
        total[0] += 1
        for i in range(3):
            total[i + 1] += after[i] - before[i]


def instrument(clock: StageClock) -> None:
    """Wrap the build's stages (the functions as the modules that call them see them)."""
    from tso_data.pairs import conversations, core, selection, snapshot

    for owner, name, stage in [
        (core, "find_candidates", "candidates (integer columns, scores)"),
        (core, "matrix_kind", "matrix: pools and slots"),
        (core, "base_kind", "base: τ split and slots"),
        (core, "draw_in_order", "draws, both kinds"),
        (selection, "dedupe", "dedupe"),
        (core, "select_first", "selection"),
        (core, "_with_texts", "pair ids + texts"),
        (core, "pair_ids", "  of it: pair ids (DuckDB SHA-256)"),
        (conversations.PromptIndex, "of", "prompt index (join)"),
        (snapshot, "conversations", "conversations (row groups)"),
        (snapshot, "snapshot_digest", "snapshot id"),
        (snapshot, "_write_atomic", "Parquet write"),
    ]:
        clock.wrap(owner, name, stage)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 1M prompts")
    parser.add_argument("--dir", type=Path, help="inputs kept here between runs (generated when missing)")
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    n_prompts = int(FULL_PROMPTS * args.scale)
    with tempfile.TemporaryDirectory(prefix="build-stages-") as tmp:
        directory = args.dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "scores.parquet").exists():
            generate(directory, n_prompts)
        clock = StageClock()
        instrument(clock)
        kernel_before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        start = _usage()
        counts = run_tso(directory, n_prompts)
        end = _usage()
    table = Table(title=f"tso-data build in stages: {n_prompts:,} prompts, {counts['rows']:,} pairs")
    for column in ("stage", "calls", "wall (s)", "CPU (s)", "page faults"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in clock.order:
        calls, wall, cpu, faults = clock.totals[stage]
        table.add_row(stage, f"{calls:.0f}", f"{wall:.2f}", f"{cpu:.2f}", f"{faults:,.0f}")
    table.add_row("whole run: inputs, pairs, snapshot", "1", f"{end[0] - start[0]:.2f}",
                  f"{end[1] - start[1]:.2f}", f"{end[2] - start[2]:,}")
    Console().print(table)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime - kernel_before
    print(f"inputs read in {counts['load_s']:.2f} s, pairs built at {counts['pairs_s']:.2f} s; peak RSS "
          f"{peak_gb:.2f} GB; kernel time {kernel:.2f} s of the {end[1] - start[1]:.2f} CPU s (mostly page faults)")

if __name__ == "__main__":
    main()
