"""Judge benchmarks, each side by side with a baseline measured in the same run.

1. Score parsing: 1M judge texts through :func:`tso_data.judge.parsing.parse_score` on one
   core (target >= 200k texts/s) vs a naive parser that scans the whole text once per
   pattern with ``re.finditer`` and keeps the last match (what most judge pipelines do).
2. Aggregation and τ: 10M judgments (targets x rubrics x samples, 2% failed) from Parquet
   to one score per target and τ, the code path of ``tso-data scores`` (target <= 10 s on
   2 cores) vs the floor of a single DuckDB ``GROUP BY target_id`` over the same file.

    python -m benchmarks.bench_judge            # full size
    python -m benchmarks.bench_judge --small    # 1% size, seconds
    python -m benchmarks.bench_judge --scale 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path

from benchmarks.results_file import write_result

RESULTS = Path(__file__).resolve().parent / "results" / "judge.json"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

ENDINGS = [
    "\n\nScore: {v}",
    "\nScore: **{v}**",
    "\n**Score:** {v}",
    " Rating: [[{v}]]",
    "\n[[{v}]]",
    " Overall I'd say {v}/10.",
    " I would rate it {v} out of 10.",
    '\nThe required format is "Score: 5".\nScore: {v}',
    "\nScore: {v}\nOn reflection, Score: {w}",
    "\nScore: 11",
    " No score given.",
    " Mix 1/2 cup of sugar. Score: {v}",
]


def judge_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` realistic judge outputs: real GPT-4 review bodies (or synthetic prose when the
    shared data is absent) with a mix of score endings, some adversarial."""
    rng = random.Random(seed)
    bodies: list[str] = []
    path = SHARED / "vicuna_eval_gpt4_review" / "judgments.jsonl"
    if path.is_file():
        for line in open(path):
            text = json.loads(line)["review_text"]
            bodies.append(text.split("\n", 1)[1] if "\n" in text else text)  # drop the "9 8" line
    else:
        words = "the answer is clear accurate detailed but misses some context and could cite sources".split()
        bodies = [" ".join(rng.choice(words) for _ in range(110)) for _ in range(1000)]
    pool = [
        body + rng.choice(ENDINGS).format(v=rng.randint(1, 10), w=rng.randint(1, 10))
        for body in bodies for _ in range(10)
    ]
    return [pool[i % len(pool)] for i in range(n)]


_NAIVE_PATTERNS = [
    re.compile(r"score\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"rating\s*[:=]\s*\[*\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]"),
    re.compile(r"(\d+(?:\.\d+)?)\s*/\s*10\b"),
    re.compile(r"(\d+(?:\.\d+)?)\s+out of\s+10\b", re.IGNORECASE),
]


def naive_parse(text: str, lo: float, hi: float) -> float | None:
    """Baseline: one full scan per pattern, the last match by position wins."""
    best: tuple[int, float] | None = None
    for pattern in _NAIVE_PATTERNS:
        for m in pattern.finditer(text):
            if best is None or m.start() > best[0]:
                best = (m.start(), float(m.group(1)))
    if best is None or not lo <= best[1] <= hi:
        return None
    return best[1]


def bench_parse(n: int) -> dict[str, object]:
    from tso_data.judge.parsing import parse_score

    texts = judge_texts(n)
    t0 = time.perf_counter()
    ours = [parse_score(t, 1, 10).score for t in texts]
    ours_s = time.perf_counter() - t0
    n_base = min(n, max(1000, n // 5))  # the baseline is slow: time a fifth, report its rate
    t0 = time.perf_counter()
    base = [naive_parse(t, 1, 10) for t in texts[:n_base]]
    base_s = time.perf_counter() - t0
    agree = sum(a == b for a, b in zip(ours[:n_base], base))
    return {
        "corpus": "vicuna GPT-4 review bodies" if (SHARED / "vicuna_eval_gpt4_review").is_dir() else "synthetic prose",
        "texts": n,
        "mean_chars": round(sum(map(len, texts[:10000])) / min(n, 10000), 1),
        "ours_per_s": round(n / ours_s),
        "baseline_per_s": round(n_base / base_s),
        "baseline_texts": n_base,
        "speedup": round((n / ours_s) / (n_base / base_s), 2),
        "ok_fraction": round(sum(s is not None for s in ours) / n, 4),
        "agreement_with_baseline": round(agree / n_base, 4),
        "target_per_s": 200_000,
        "target_met": n / ours_s >= 200_000,
    }


def write_judgments(path: Path, n: int, seed: int = 0) -> dict[str, int]:
    """``n`` judgments: 4 rubrics x 2 samples per target, 8 sources, 2% not ok."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    per_target = 8
    n_targets = max(1, n // per_target)
    n = n_targets * per_target
    target = np.repeat(np.arange(n_targets), per_target)
    n_prompts = max(1, n_targets // 16)
    rubrics = np.array(["factuality", "conciseness", "logic", "comprehension"])
    status_ok = rng.random(n) >= 0.02
    score = np.where(status_ok, rng.integers(1, 11, n).astype(float), np.nan)
    table = pa.table(
        {
            "target_id": pa.array(np.char.add("t", target.astype(str))),
            "prompt_id": pa.array(np.char.add("p", (target % n_prompts).astype(str))),
            "source": pa.array(np.char.add("model-", (target // n_prompts % 8).astype(str))),
            "judge": pa.array(np.full(n, "judge-7b")),
            "rubric": pa.array(rubrics[np.tile(np.repeat(np.arange(4), 2), n_targets)]),
            "status": pa.array(np.where(status_ok, "ok", "unparsed")),
            "score": pa.array(score, mask=~status_ok),
        }
    )
    pq.write_table(table, path, row_group_size=1_000_000)
    one_per_target = np.arange(n_targets) * per_target
    pq.write_table(table.select(["target_id", "prompt_id", "source"]).take(one_per_target),
                   path.with_name("targets.parquet"))  # the catalog's responses, as `scores` reads them
    return {"judgments": n, "targets": n_targets, "prompts": n_prompts}


def bench_aggregate(n: int, workdir: Path) -> dict[str, object]:
    """Both sides read the same Parquet file with 2 threads: ours runs the `tso-data scores`
    path (read judgments and targets, tso_data.scoring aggregation, τ, per-source
    distribution, per-prompt shape)."""
    path = workdir / "judgments.parquet"
    sizes = write_judgments(path, n)
    os.environ["POLARS_MAX_THREADS"] = "2"  # read by polars at import: import it only now
    import duckdb
    import polars as pl

    from tso_data.judge.scores import score_report

    con = duckdb.connect(config={"threads": 2})
    t0 = time.perf_counter()
    floor = con.sql(f"SELECT target_id, avg(score) FROM read_parquet('{path}') GROUP BY target_id").to_arrow_table()
    floor_s = time.perf_counter() - t0
    con.close()
    t0 = time.perf_counter()
    report = score_report(pl.read_parquet(path), base="model-0", judge="judge-7b",
                          targets=pl.read_parquet(path.with_name("targets.parquet")))
    ours_s = time.perf_counter() - t0
    n_scored = int(report.distribution.get_column("n").sum())
    return {
        **sizes,
        "polars_threads": pl.thread_pool_size(),
        "targets_scored": n_scored,  # a target with a failed judgment in some rubric has no score
        "baseline_groups": floor.num_rows,
        "ours_s": round(ours_s, 3),
        "baseline_duckdb_groupby_s": round(floor_s, 3),
        "ratio_vs_floor": round(ours_s / floor_s, 2),
        "tau": round(report.tau or float("nan"), 4),
        "target_s": 10.0,
        "target_met": ours_s <= 10.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full sizes (1M texts, 10M judgments)")
    parser.add_argument("--small", action="store_true", help="--scale 0.01")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/judge.json")
    parser.add_argument("--parse-only", action="store_true",
                        help="only the parsing benchmark (needs nothing but the stdlib)")
    args = parser.parse_args(argv)
    scale = 0.01 if args.small else args.scale
    parse = bench_parse(max(1000, int(1_000_000 * scale)))
    if args.parse_only:
        print(json.dumps({"scale": scale, "parse": parse}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        aggregate = bench_aggregate(max(8000, int(10_000_000 * scale)), Path(tmp))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench_judge (scale {scale:g}, {os.cpu_count()} CPUs visible)")
    for col in ("benchmark", "size", "ours", "baseline", "ratio", "target", "met"):
        table.add_column(col)
    table.add_row(
        "parse (1 core)", f"{parse['texts']:,} texts", f"{parse['ours_per_s']:,}/s",
        f"{parse['baseline_per_s']:,}/s (naive)", f"{parse['speedup']}x",
        ">= 200,000/s", str(parse["target_met"]),
    )
    table.add_row(
        "aggregate + τ (2 threads)", f"{aggregate['judgments']:,} judgments", f"{aggregate['ours_s']} s",
        f"{aggregate['baseline_duckdb_groupby_s']} s (group-by floor)", f"{aggregate['ratio_vs_floor']}x",
        "<= 10 s", str(aggregate["target_met"]),
    )
    Console(width=120).print(table)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if not args.no_write:
        write_result(RESULTS, {"scale": scale, "load_average_1m": load, "parse": parse, "aggregate": aggregate})


if __name__ == "__main__":
    main()
