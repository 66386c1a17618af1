"""Benchmark of `tso-data build`'s core: synthetic catalog of P prompts × 8 matrix cells
+ 4 scored base answers per prompt (12·P short responses) → P pairs (50 % matrix, 50 % base).

Three runs, each in its own process (so peak RSS is its own):

- ``tso``: Parquet inputs → Polars frames → pools → :func:`build_pairs` → :func:`write_snapshot`
  (conversations → the snapshot file: pair ids, content hash, pinned writer), as `tso-data
  build` calls them after reading the catalog tables;
- ``floor``: DuckDB writing the same number of pair rows with the same columns from a
  trivial join of the same inputs (no sampling) to Parquet;
- ``pandas``: a straightforward pandas implementation of the same sampling (weighted
  source draw per prompt, τ split, best/worst), run on a subset and scaled linearly.

``python -m benchmarks.bench_build [--scale 1.0] [--pandas-prompts 100000] [--repeats 3]``;
``--small`` is ``--scale 0.02``. tso and the floor run alternately ``--repeats`` times and
their median times are compared. Results: benchmarks/results/build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results_file import write_result

FULL_PROMPTS = 1_000_000
CELLS = [(f"m-v{v}-{s}b", v, s) for s in (7, 70) for v in (1, 2, 3, 4)]  # 8 matrix cells
BASE = ("m-v5-7b", 5, 7)
RESULTS = Path(__file__).resolve().parent / "results" / "build.json"


def generate(directory: Path, n_prompts: int) -> None:
    """Synthetic inputs as Parquet, ids computed with the catalog's own hash (in DuckDB)."""
    import duckdb

    from tso_data.ids import sql_hash

    con = duckdb.connect()
    pid = sql_hash("prompt", "'p' || i::VARCHAR")
    con.execute(f"""COPY (SELECT {pid} AS prompt_id,
        [{{'role': 'user', 'content': 'prompt ' || i::VARCHAR}}] AS messages, 1 AS n_turns, 'train' AS split
        FROM range({n_prompts}) t(i)) TO '{directory}/prompts.parquet' (FORMAT parquet)""")
    models = [c[0] for c in CELLS] + [BASE[0]] * 4
    samples = [0] * len(CELLS) + [0, 1, 2, 3]
    con.execute(f"""COPY (
        SELECT {pid} AS prompt_id, m.model, m.sample_index,
               {sql_hash('response', pid, 'm.model', "'s'", 'm.sample_index::VARCHAR')} AS response_id,
               ['answer ' || i::VARCHAR || ' of ' || m.model || ' #' || m.sample_index::VARCHAR] AS turns
        FROM range({n_prompts}) t(i), (SELECT unnest({models}) AS model, unnest({samples}) AS sample_index) m
    ) TO '{directory}/responses.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT response_id AS target_id, (hash(response_id) % 10)::DOUBLE + 1 AS score
        FROM read_parquet('{directory}/responses.parquet') WHERE model = '{BASE[0]}')
        TO '{directory}/scores.parquet' (FORMAT parquet)""")
    con.close()


def run_tso(directory: Path, n_pairs: int) -> dict[str, float]:
    import polars as pl

    from tso_data import speed
    from tso_data.pairs.config import load_round_config
    from tso_data.pairs.core import BuildInputs, build_pairs
    from tso_data.pairs.pools import resolve_pools
    from tso_data.pairs.snapshot import write_snapshot

    t0 = time.perf_counter()
    speed.apply(speed.BUILD)  # as `tso-data build` does before it reads the inputs
    prompts = pl.read_parquet(directory / "prompts.parquet")
    responses = pl.read_parquet(directory / "responses.parquet", columns=["response_id", "prompt_id", "model", "turns"])
    scores = pl.read_parquet(directory / "scores.parquet")
    answers = pl.DataFrame(schema={"answer_id": pl.String, "prompt_id": pl.String, "source": pl.String,
                                   "turns": pl.List(pl.String)})
    models = pl.DataFrame(
        [{"name": n, "kind": "model", "family": "m", "version": str(v), "version_order": v, "size_b": float(s)}
         for n, v, s in [*CELLS, BASE]]
    )
    t_load = time.perf_counter() - t0
    config = load_round_config(None, 1,
                               {"base_model": BASE[0], "pairs": n_pairs, "positive": {"sources": ["newest-largest"]}})
    pools = resolve_pools(config, models)
    result = build_pairs(BuildInputs(prompts, answers, responses, scores), config, pools)
    t_pairs = time.perf_counter() - t0
    _, _, _, rows = write_snapshot(result.pairs, prompts, 1, config.to_dict(), directory / "out")
    return {"rows": rows, "load_s": t_load, "pairs_s": t_pairs, **result.counts}


def run_floor(directory: Path, n_pairs: int) -> dict[str, float]:
    """Same row count and columns, no sampling: each prompt's first cell vs its second."""
    import duckdb

    con = duckdb.connect()
    c1, c2 = CELLS[7][0], CELLS[0][0]
    con.execute(f"""COPY (
        SELECT p.messages AS prompt,
               [{{'role': 'assistant', 'content': a.turns[1]}}] AS chosen,
               [{{'role': 'assistant', 'content': b.turns[1]}}] AS rejected,
               a.response_id || b.response_id AS pair_id, p.prompt_id, 'matrix' AS kind,
               a.model AS chosen_source, b.model AS rejected_source,
               NULL::DOUBLE AS chosen_score, NULL::DOUBLE AS rejected_score, 1::INTEGER AS round
        FROM read_parquet('{directory}/prompts.parquet') p
        JOIN read_parquet('{directory}/responses.parquet') a ON a.prompt_id = p.prompt_id AND a.model = '{c1}'
        JOIN read_parquet('{directory}/responses.parquet') b ON b.prompt_id = p.prompt_id AND b.model = '{c2}'
        LIMIT {n_pairs}
    ) TO '{directory}/floor.parquet' (FORMAT parquet, COMPRESSION zstd)""")
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{directory}/floor.parquet')").fetchall()[0][0]
    return {"rows": rows}


def run_pandas(directory: Path, n_prompts: int) -> dict[str, float]:
    """The straightforward way: group by prompt, loop, draw with numpy per prompt."""
    import numpy as np
    import pandas as pd

    prompts = pd.read_parquet(directory / "prompts.parquet").head(n_prompts)
    keep = set(prompts["prompt_id"])
    responses = pd.read_parquet(directory / "responses.parquet")
    responses = responses[responses["prompt_id"].isin(keep)]
    scores = pd.read_parquet(directory / "scores.parquet")
    responses = responses.merge(scores, left_on="response_id", right_on="target_id", how="left")
    positive = {CELLS[7][0]: 1.0}
    negative = {c[0]: 1.0 for c in CELLS[:7]}
    base = responses[responses["model"] == BASE[0]]
    tau = base["score"].mean()
    rng = np.random.default_rng(43)
    rows = []
    for i, (prompt_id, group) in enumerate(responses.groupby("prompt_id")):
        if i % 2 == 0:
            pos = group[group["model"].isin(positive)]
            neg = group[group["model"].isin(negative)]
            srcs = neg["model"].unique()
            w = np.array([negative[s] for s in srcs])
            src = rng.choice(srcs, p=w / w.sum())
            c = pos.sample(1, random_state=rng)
            r = neg[neg["model"] == src].sample(1, random_state=rng)
            rows.append((prompt_id, "matrix", c["turns"].iloc[0][0], r["turns"].iloc[0][0]))
        else:
            b = group[(group["model"] == BASE[0]) & group["score"].notna()]
            up, down = b[b["score"] > tau], b[b["score"] <= tau]
            if len(up) and len(down):
                rows.append((prompt_id, "base", up.sort_values("score").iloc[-1]["turns"][0],
                             down.sort_values("score").iloc[0]["turns"][0]))
    out = pd.DataFrame(rows, columns=["prompt_id", "kind", "chosen", "rejected"])
    out.to_parquet(directory / "pandas.parquet")
    return {"rows": len(out)}


def _child(method: str, directory: Path, n: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.bench_build", "--worker", method, "--dir", str(directory), "--n", str(n)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def _median_run(runs: list[dict[str, float]]) -> dict[str, object]:
    """The run of median time (its own numbers, so RSS and rows belong to one run), plus
    every run's time and the largest peak RSS."""
    ordered = sorted(runs, key=lambda r: r["inner_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["all_inner_s"] = [r["inner_s"] for r in runs]
    median["max_peak_rss_gb"] = max(r["peak_rss_gb"] for r in runs)
    return median


def _worker(method: str, directory: Path, n: int) -> None:
    # libraries are imported before the clock starts (an import is not work on the data)
    import duckdb  # noqa: F401
    import pandas  # noqa: F401
    import polars  # noqa: F401

    import tso_data.pairs.core  # noqa: F401
    import tso_data.pairs.snapshot  # noqa: F401

    t0 = time.perf_counter()
    fn = {"tso": run_tso, "floor": run_floor, "pandas": run_pandas}[method]
    out = fn(directory, n)
    out["inner_s"] = time.perf_counter() - t0
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of 1M prompts")
    p.add_argument("--small", action="store_true", help="same as --scale 0.02")
    p.add_argument("--pandas-prompts", type=int, default=100_000, help="subset for the pandas baseline (scaled up)")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of tso and the floor (medians compared)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(args.worker, Path(args.dir), args.n)
        return
    from rich.console import Console
    from rich.table import Table

    scale = 0.02 if args.small else args.scale
    n_prompts = int(FULL_PROMPTS * scale)
    n_pandas = min(args.pandas_prompts, n_prompts)
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        generate(directory, n_prompts)
        gen_s = time.perf_counter() - t0
        # tso and the floor alternate, each run in a fresh process; the ratio is of medians,
        # so one run disturbed by the machine moves neither side much
        tso_runs, floor_runs = [], []
        for _ in range(args.repeats):
            shutil.rmtree(directory / "out", ignore_errors=True)
            (directory / "floor.parquet").unlink(missing_ok=True)
            tso_runs.append(_child("tso", directory, n_prompts))
            floor_runs.append(_child("floor", directory, n_prompts))
        tso, floor = _median_run(tso_runs), _median_run(floor_runs)
        # the pandas baseline gets its own smaller catalog of the same shape (then scaled)
        small = directory / "pandas"
        small.mkdir()
        generate(small, n_pandas)
        pandas = _child("pandas", small, n_pandas)
    pandas_scaled = pandas["inner_s"] * n_prompts / n_pandas
    result = {
        "prompts": n_prompts, "responses": 12 * n_prompts, "pairs_asked": n_prompts, "scale": scale,
        "cpu_count": os.cpu_count(), "load_average_after": os.getloadavg(), "generate_s": gen_s,
        "tso": tso, "floor": floor, "pandas": {**pandas, "prompts": n_pandas, "scaled_s": pandas_scaled},
        "ratio_to_floor": tso["inner_s"] / floor["inner_s"],
        "speedup_vs_pandas": pandas_scaled / tso["inner_s"],
        "ratio_each_repeat": [t / f for t, f in zip(tso["all_inner_s"], floor["all_inner_s"])],
        "targets": {"ratio_to_floor<=3": tso["inner_s"] / floor["inner_s"] <= 3,
                    "peak_rss_gb<=8": tso["max_peak_rss_gb"] <= 8,
                    "speedup_vs_pandas>=10": pandas_scaled / tso["inner_s"] >= 10},
    }
    table = Table(title=f"tso-data build: {n_prompts:,} prompts × 12 responses → {n_prompts:,} pairs")
    for col in ("method", "rows", "time (s)", "each run (s)", "peak RSS (GB)", "vs tso"):
        table.add_column(col, justify="right" if col != "method" else "left")

    def runs(arm: dict[str, object]) -> str:
        return ", ".join(f"{t:.2f}" for t in arm["all_inner_s"])  # type: ignore[union-attr]

    table.add_row("tso build (sampling + snapshot)", f"{tso['rows']:,}", f"{tso['inner_s']:.2f}", runs(tso),
                  f"{tso['max_peak_rss_gb']:.2f}", "1.0×")
    table.add_row("floor: DuckDB trivial join → Parquet", f"{floor['rows']:,}", f"{floor['inner_s']:.2f}", runs(floor),
                  f"{floor['max_peak_rss_gb']:.2f}", f"{floor['inner_s'] / tso['inner_s']:.2f}×")
    table.add_row(f"pandas loop ({n_pandas:,} prompts, scaled)", f"{pandas['rows']:,}", f"{pandas_scaled:.1f}", "",
                  f"{pandas['peak_rss_gb']:.2f}", f"{pandas_scaled / tso['inner_s']:.1f}×")
    console = Console()
    console.print(table)
    console.print(f"ratio to floor {result['ratio_to_floor']:.2f} (medians of {args.repeats}; each run: "
                  f"{', '.join(f'{r:.2f}' for r in result['ratio_each_repeat'])}; target ≤ 3); speed-up vs pandas "
                  f"{result['speedup_vs_pandas']:.1f}× (target ≥ 10); "
                  f"peak RSS {tso['max_peak_rss_gb']:.2f} GB (target ≤ 8)")
    write_result(RESULTS, result)


if __name__ == "__main__":
    main()
