"""Report of the CPU example: the matrix, each round, and the baseline arms.

    python examples/tso_cpu/report.py --catalog WORK/catalog --runs WORK/runs --out WORK/report

Everything is read back from the catalog (plain SQL over its tables) and the training runs'
``metrics.jsonl``; the held-out score of a model is the mean verifier score of its greedy
answers to the held-out prompts (``prompts.split = 'heldout'``), judged by the same
function judge as the rounds. Writes ``report.json``, ``report.png`` and prints rich tables.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from tso_data.catalog import Catalog

JUDGE = "fn:tso_data.examples.arith:score"
ARM_FAMILY = "arith-arm"

# Held-out score per source: greedy responses (temperature 0) and the human answers.
HELDOUT_SQL = """
SELECT j.source,
       count(*)                        AS n,
       avg(j.score)                    AS mean,
       stddev_samp(j.score)            AS sd,
       avg(CAST(j.score = 10 AS INT))  AS exact
FROM judgments j
JOIN prompts p USING (prompt_id)
LEFT JOIN responses r ON r.response_id = j.target_id
WHERE j.status = 'ok' AND j.judge = ? AND p.split = 'heldout'
  AND (j.target_kind = 'answer' OR CAST(json_extract(r.sampling, '$.temperature') AS DOUBLE) = 0)
GROUP BY j.source
"""


PER_PROMPT_SQL = """
SELECT j.source, j.prompt_id, avg(j.score) AS score
FROM judgments j
JOIN prompts p USING (prompt_id)
LEFT JOIN responses r ON r.response_id = j.target_id
WHERE j.status = 'ok' AND j.judge = ? AND p.split = 'heldout'
  AND (j.target_kind = 'answer' OR CAST(json_extract(r.sampling, '$.temperature') AS DOUBLE) = 0)
GROUP BY j.source, j.prompt_id
"""


def per_prompt_scores(catalog: Catalog, judge: str) -> dict[str, dict[str, float]]:
    """source -> prompt_id -> held-out score (for paired comparisons on the same prompts)."""
    out: dict[str, dict[str, float]] = {}
    for r in catalog.arrow(PER_PROMPT_SQL, [judge]).to_pylist():
        out.setdefault(r["source"], {})[r["prompt_id"]] = r["score"]
    return out


def paired_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float] | None:
    """Mean per-prompt difference after − before on the prompts both answered, with its
    standard error: the noise of comparing two models on the same prompts, far smaller
    than either mean's own standard error.

    >>> paired_delta({"a": 6.0, "b": 4.0, "c": 5.0}, {"a": 5.0, "b": 4.0, "c": 4.0})
    {'delta': 0.6666666666666666, 'se': 0.3333333333333333, 'n': 3}
    """
    common = sorted(set(after) & set(before))
    if len(common) < 2:
        return None
    diffs = [after[k] - before[k] for k in common]
    return {"delta": statistics.fmean(diffs), "se": statistics.stdev(diffs) / math.sqrt(len(diffs)), "n": len(diffs)}


def heldout_scores(catalog: Catalog, judge: str) -> dict[str, dict[str, float]]:
    rows = catalog.arrow(HELDOUT_SQL, [judge]).to_pylist()
    out = {}
    for r in rows:
        se = (r["sd"] or 0.0) / math.sqrt(r["n"]) if r["n"] else float("nan")
        out[r["source"]] = {"n": r["n"], "mean": r["mean"], "se": se, "exact": r["exact"]}
    return out


def models(catalog: Catalog) -> list[dict[str, Any]]:
    return catalog.arrow(
        "SELECT name, family, version, version_order, size_b, path, note FROM models "
        "WHERE kind = 'model' ORDER BY family, size_b, version_order"
    ).to_pylist()


def rounds(catalog: Catalog, runs: Path | None, scores: dict[str, dict[str, float]],
           by_prompt: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per round: its (latest) default snapshot, the base before and the policy after."""
    snaps = catalog.arrow(
        "SELECT round, snapshot_id, path, base_model, tau, n_pairs, n_matrix, n_base, config, created_at "
        "FROM snapshots ORDER BY round, created_at"
    ).to_pylist()
    trained_on = {r: _trained_snapshot(runs / f"round-{r}") for r in {s["round"] for s in snaps}} if runs else {}
    by_round: dict[int, dict[str, Any]] = {}
    for s in snaps:  # the snapshot the round's fit trained on; else the round's first one
        if trained_on.get(s["round"]) in (None, s["snapshot_id"]):
            by_round.setdefault(s["round"], s)
    out = []
    for r, s in sorted(by_round.items()):
        base = s["base_model"]
        policy = f"arith-v{int(base.split('-v')[1].split('-')[0]) + 1}-s" if base.startswith("arith-v") else None
        pairs = pq.read_table(catalog.root / s["path"], columns=["kind", "chosen_source", "rejected_source"])
        fit = _fit_summary(runs / f"round-{r}" / "metrics.jsonl") if runs else {}
        out.append({
            "round": r,
            "snapshot": s["snapshot_id"],
            "base": base,
            "base_heldout": scores.get(base, {}).get("mean"),
            "policy": policy,
            "policy_heldout": scores.get(policy, {}).get("mean") if policy else None,
            "paired_delta": paired_delta(by_prompt.get(policy or "", {}), by_prompt.get(base, {})),
            "tau": s["tau"],
            "pairs": s["n_pairs"],
            "pairs_matrix": s["n_matrix"],
            "pairs_base": s["n_base"],
            "chosen_sources": _counts(pairs.column("chosen_source").to_pylist()),
            "rejected_sources": _counts(pairs.column("rejected_source").to_pylist()),
            **fit,
        })
    return out


def arms(catalog: Catalog, scores: dict[str, dict[str, float]], by_prompt: dict[str, dict[str, float]],
         base: str | None) -> list[dict[str, Any]]:
    """Baseline arms (examples/tso_cpu/baselines.sh): models of family arith-arm whose note
    reads 'arm=NAME seed=S'. Per arm: the held-out score's mean and spread over seeds, and
    the paired difference to the round-1 base (per prompt, averaged over seeds)."""
    groups: dict[str, list[str]] = {}
    for m in models(catalog):
        if m["family"] != ARM_FAMILY or m["name"] not in scores:
            continue
        fields = dict(part.split("=", 1) for part in (m["note"] or "").split() if "=" in part)
        groups.setdefault(fields.get("arm", m["name"]), []).append(m["name"])
    out = []
    for arm, names in sorted(groups.items()):
        v = [scores[n]["mean"] for n in names]
        prompts = set.intersection(*(set(by_prompt[n]) for n in names))
        seed_mean = {k: statistics.fmean(by_prompt[n][k] for n in names) for k in prompts}
        out.append({
            "arm": arm, "seeds": len(v), "models": names, "mean": statistics.fmean(v),
            "sd": statistics.stdev(v) if len(v) > 1 else 0.0, "min": min(v), "max": max(v), "scores": v,
            "paired_delta_vs_base": paired_delta(seed_mean, by_prompt.get(base or "", {})),
        })
    return out


def _trained_snapshot(run_dir: Path) -> str | None:
    """The snapshot id a `tso-train fit` run read (from its run.json), if there is one."""
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        return None
    return Path(json.loads(run_json.read_text())["snapshot"]).stem


def _counts(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _fit_summary(metrics: Path) -> dict[str, Any]:
    if not metrics.is_file():
        return {}
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "rewards/accuracies" in r]
    if not rows:
        return {}
    last = rows[-1]
    return {"fit_steps": len(rows), "fit_final_accuracy": last["rewards/accuracies"],
            "fit_final_margin": last["rewards/margins"], "fit_final_loss": last["loss"]}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _delta(d: dict[str, float] | None) -> str:
    return "-" if d is None else f"{d['delta']:+.2f} ± {d['se']:.2f}"


def print_tables(console: Console, report: dict[str, Any]) -> None:
    scores = report["heldout"]
    t = Table(title="held-out verifier score (1-10) per source, greedy answers")
    for col in ("source", "family", "version", "size (B)", "n", "mean ± se", "exact"):
        t.add_column(col, justify="left" if col in ("source", "family") else "right")
    known = {m["name"]: m for m in report["models"]}
    for name in sorted(scores, key=lambda n: (known.get(n, {}).get("family") or "", n)):
        m = known.get(name, {})
        s = scores[name]
        t.add_row(name, m.get("family") or "human", str(m.get("version") or "-"),
                  f"{m['size_b']:.2g}" if m.get("size_b") else "-", str(s["n"]),
                  f"{s['mean']:.2f} ± {s['se']:.2f}", f"{100 * s['exact']:.0f}%")
    console.print(t)
    t = Table(title="TSO rounds: the base model before, the trained policy after")
    for col in ("round", "base", "held-out", "τ", "pairs (matrix/base)", "fit acc.", "policy", "held-out",
                "Δ paired ± se"):
        t.add_column(col, justify="right")
    for r in report["rounds"]:
        t.add_row(str(r["round"]), r["base"], _fmt(r["base_heldout"]), _fmt(r["tau"]),
                  f"{r['pairs']} ({r['pairs_matrix']}/{r['pairs_base']})", _fmt(r.get("fit_final_accuracy")),
                  r["policy"] or "-", _fmt(r["policy_heldout"]),
                  _delta(r["paired_delta"]))
    console.print(t)
    if report["arms"]:
        t = Table(title="baseline arms from the round-1 base, same budget (held-out score over seeds)")
        for col in ("arm", "seeds", "mean", "sd", "min", "max", "Δ vs base, paired ± se"):
            t.add_column(col, justify="right")
        for a in report["arms"]:
            t.add_row(a["arm"], str(a["seeds"]), _fmt(a["mean"]), _fmt(a["sd"]), _fmt(a["min"]), _fmt(a["max"]),
                      _delta(a["paired_delta_vs_base"]))
        console.print(t)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = report["heldout"]
    n_axes = 2 if report["arms"] else 1
    fig, axes = plt.subplots(1, n_axes, figsize=(6 * n_axes, 4), squeeze=False)
    ax = axes[0][0]
    rounds_ = report["rounds"]
    if rounds_:
        names = [rounds_[0]["base"]] + [r["policy"] for r in rounds_]
        xs = list(range(len(names)))
        ys = [scores.get(n, {}).get("mean") for n in names]
        errs = [scores.get(n, {}).get("se", 0.0) for n in names]
        ax.errorbar(xs, ys, yerr=errs, fmt="o-", color="black", capsize=3, label="base → policy of each round (± se)")
        ax.set_xticks(xs, [f"{x}\n{n}" for x, n in zip(xs, names)], fontsize=7)
    for i, (name, style) in enumerate((("arith-v1-s", ":"), ("arith-v1-l", "-."), ("arith-v2-l", "--"), ("human", "-"))):
        if name in scores:
            ax.axhline(scores[name]["mean"], linestyle=style, color=f"C{i}", alpha=0.8, label=name)
    ax.set_xlabel("after round")
    ax.set_ylabel("held-out verifier score (1-10)")
    ax.set_title("TSO rounds on CPU")
    ax.legend(fontsize=7)
    if report["arms"]:
        ax = axes[0][1]
        base_mean = rounds_[0]["base_heldout"] if rounds_ else None
        arms_ = [a for a in report["arms"] if a["paired_delta_vs_base"] is not None]
        xs = list(range(len(arms_)))
        ax.bar(xs, [a["paired_delta_vs_base"]["delta"] for a in arms_],
               yerr=[a["paired_delta_vs_base"]["se"] for a in arms_], capsize=4, color="tab:blue", alpha=0.6,
               label="mean over seeds (± paired se over prompts)")
        if base_mean is not None:
            for x, a in zip(xs, arms_):
                ax.scatter([x] * len(a["scores"]), [v - base_mean for v in a["scores"]], color="black", s=12,
                           zorder=3, label="one seed" if x == 0 else None)
        ax.axhline(0.0, color="grey", linewidth=1)
        ax.set_xticks(xs, [a["arm"] for a in arms_], fontsize=8)
        ax.set_ylabel("held-out score − round-1 base (same prompts)")
        ax.set_title("baseline arms, one round, same budget")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", required=True, type=Path)
    ap.add_argument("--runs", type=Path, help="directory of the round runs (round-R/metrics.jsonl)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--judge", default=JUDGE)
    args = ap.parse_args()
    catalog = Catalog.open(args.catalog)
    scores = heldout_scores(catalog, args.judge)
    by_prompt = per_prompt_scores(catalog, args.judge)
    rounds_ = rounds(catalog, args.runs, scores, by_prompt)
    report = {
        "judge": args.judge,
        "heldout": scores,
        "models": models(catalog),
        "rounds": rounds_,
        "arms": arms(catalog, scores, by_prompt, rounds_[0]["base"] if rounds_ else None),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    plot(report, args.out / "report.png")
    console = Console(width=max(Console().width, 120))  # full tables in logs and pipes too
    print_tables(console, report)
    console.print(f"wrote {args.out / 'report.json'} and {args.out / 'report.png'}")


if __name__ == "__main__":
    main()
