"""Report of the CPU example: the testbed's checks, each round, and the paper's comparisons.

    python examples/tso_cpu/report.py --catalog WORK/catalog --runs WORK/runs --out WORK/report

Held-out scores and paired differences come from `tso-data eval`'s Python API
(:func:`tso_data.eval.leaderboard`) over the verifier's stored judgments of each model's greedy
answers to the held-out prompts; the rest is plain SQL over the catalog and the runs'
``metrics.jsonl``. Writes ``report.json``, three PNGs (``heldout.png``, ``arms.png``,
``training.png``) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console

from tso_data.catalog import Catalog
from tso_data.eval import leaderboard
from tso_data.examples.arith import parse_question, read_answer

JUDGE = "fn:tso_data.examples.arith:score"
ARM_FAMILY = "arith-arm"
MATRIX = ("arith-v1-s", "arith-v1-l", "arith-v2-s", "arith-v2-l")
# Which single matrix cell an arm's negatives came from (paper Table 4).
NEGATIVE_OF_ARM = {"neg-v1-s": "arith-v1-s", "neg-v1-l": "arith-v1-l", "neg-base": "arith-v2-s"}

PASS_SQL = """
SELECT j.source, avg(CAST(j.score = 10 AS DOUBLE)) AS pass_rate
FROM judgments j JOIN prompts p USING (prompt_id)
WHERE j.status = 'ok' AND j.judge = ? AND p.split = 'heldout'
GROUP BY j.source
"""
SAMPLES_SQL = """
SELECT r.prompt_id, p.messages[1].content AS question, r.turns[1] AS answer
FROM responses r JOIN prompts p USING (prompt_id)
WHERE r.model = ? AND p.split = 'train' AND CAST(json_extract(r.sampling, '$.temperature') AS DOUBLE) > 0
"""


def scores(catalog: Catalog, models: list[str], baseline: str) -> dict[str, dict[str, Any]]:
    """model -> held-out score ± se, paired difference to ``baseline`` ± se, pass rate."""
    board = leaderboard(catalog, judge=JUDGE, models=models, baseline=baseline)
    passed = {r["source"]: r["pass_rate"] for r in catalog.arrow(PASS_SQL, [JUDGE]).to_pylist()}
    out = {}
    for row in board.table.to_dicts():
        out[row["model"]] = {
            "n": row["n"], "mean": row["score"], "se": row["score_se"], "pass_rate": passed.get(row["model"]),
            "delta": row["delta_mean"], "delta_se": row["delta_se"], "n_paired": row["n_paired"],
        }
    return out


def sample_mix(catalog: Catalog, model: str) -> dict[str, Any]:
    """How the base's own sampled train answers mix right and wrong results, per prompt."""
    by_prompt: dict[str, list[bool]] = {}
    for row in catalog.arrow(SAMPLES_SQL, [model]).to_pylist():
        problem = parse_question(row["question"])
        _, value = read_answer(problem, row["answer"]) if problem else (False, None)
        by_prompt.setdefault(row["prompt_id"], []).append(problem is not None and value == problem.result)
    if not by_prompt:
        return {}
    mixed = sum(1 for v in by_prompt.values() if any(v) and not all(v))
    return {"prompts": len(by_prompt), "samples_per_prompt": max(len(v) for v in by_prompt.values()),
            "mixed_share": mixed / len(by_prompt),
            "right_share": statistics.fmean(x for v in by_prompt.values() for x in v)}


def models_table(catalog: Catalog) -> list[dict[str, Any]]:
    return catalog.arrow(
        "SELECT name, family, version, size_b, path, note FROM models WHERE kind = 'model' "
        "ORDER BY family, size_b, version_order").to_pylist()


def rounds(catalog: Catalog, runs: Path, known: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per finished round: the snapshot its fit read, the base before, the policy after."""
    policy_at = {str(Path(m["path"]).resolve()): m["name"] for m in known if m["path"]}
    snaps = {s["snapshot_id"]: s for s in catalog.arrow(
        "SELECT round, snapshot_id, base_model, tau, n_pairs, n_matrix, n_base FROM snapshots").to_pylist()}
    out = []
    for run_dir in sorted(runs.glob("round-*"), key=lambda p: int(p.name.split("-")[1])):
        run_json = run_dir / "run.json"
        policy = policy_at.get(str((run_dir / "final").resolve()))
        if not run_json.is_file() or policy is None:
            continue
        snap = snaps.get(json.loads(run_json.read_text())["snapshot_id"])
        if snap is None:
            continue
        base = snap["base_model"]
        s = scores(catalog, [base, policy], baseline=base)
        out.append({
            "round": snap["round"], "snapshot": snap["snapshot_id"], "base": base, "policy": policy,
            "base_heldout": s[base], "policy_heldout": s[policy], "tau": snap["tau"],
            "pairs": snap["n_pairs"], "pairs_matrix": snap["n_matrix"], "pairs_base": snap["n_base"],
            "fit": fit_summary(run_dir / "metrics.jsonl"),
        })
    return out


def arms(catalog: Catalog, known: list[dict[str, Any]], base: str, base_scores: dict[str, Any],
         matrix: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Arms of baselines.sh (family arith-arm, note 'arm=NAME seed=S snapshot=ID'): per arm the
    paired difference to the round-1 base for each seed, their mean and spread over seeds."""
    members: dict[str, list[dict[str, str]]] = {}
    for m in known:
        if m["family"] == ARM_FAMILY:
            note = dict(part.split("=", 1) for part in (m["note"] or "").split() if "=" in part)
            members.setdefault(note.get("arm", m["name"]), []).append({"model": m["name"], **note})
    if not members:
        return []
    names = [m["model"] for group in members.values() for m in group]
    judged = set(catalog.arrow(f"SELECT DISTINCT source FROM judgments WHERE judge = ? AND source IN "
                               f"({', '.join('?' * len(names))})", [JUDGE, *names]).column("source").to_pylist())
    s = scores(catalog, [base, *sorted(judged)], baseline=base)
    snapshots = catalog.arrow("SELECT snapshot_id, n_pairs FROM snapshots").to_pylist()
    pairs = {r["snapshot_id"]: r["n_pairs"] for r in snapshots}
    out = []
    for arm, group in sorted(members.items()):
        seeds = [{"seed": m.get("seed"), "model": m["model"], "pairs": pairs.get(m.get("snapshot", "")),
                  **s[m["model"]]}
                 for m in group if m["model"] in s]
        if not seeds:
            continue
        deltas = [x["delta"] for x in seeds]
        row = {"arm": arm, "seeds": seeds, "delta_mean": statistics.fmean(deltas),
               "delta_seed_sd": statistics.stdev(deltas) if len(deltas) > 1 else 0.0,
               "delta_se_typical": statistics.fmean(x["delta_se"] for x in seeds),
               "score_mean": statistics.fmean(x["mean"] for x in seeds)}
        cell = NEGATIVE_OF_ARM.get(arm)
        if cell in matrix:  # Table 4: the negative source's distance from the base
            row["negative"] = cell
            row["negative_distance"] = matrix[cell]["mean"] - base_scores["mean"]
        out.append(row)
    return out


def fit_summary(metrics: Path) -> dict[str, Any]:
    rows = read_metrics(metrics)
    if not rows:
        return {}
    last = rows[-1]
    return {"steps": len(rows), "final_accuracy": last["rewards/accuracies"],
            "final_margin": last["rewards/margins"], "final_loss": last["loss"]}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "rewards/accuracies" in r]


def checks(matrix: dict[str, dict[str, Any]], base: str, mix: dict[str, Any]) -> dict[str, Any]:
    """The testbed's own requirements, measured (docs/example.md, "The testbed meets its own requirements")."""
    v = {name: matrix[name]["mean"] for name in MATRIX if name in matrix}
    weaker = [n for n in v if n not in (base, "arith-v2-l")]
    return {
        "newest_largest_above_base": v.get("arith-v2-l", 0) > v.get(base, 0),
        "base_above_older_or_smaller": all(v[base] > v[n] for n in weaker) if base in v else False,
        "base_pass_rate": matrix.get(base, {}).get("pass_rate"),
        "base_sample_mix": mix,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", required=True, type=Path)
    ap.add_argument("--runs", required=True, type=Path, help="directory of the round runs (round-R/)")
    ap.add_argument("--arms", type=Path, help="directory of the arm runs (baselines.sh), for their training curves")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    from figures import plot_arms, plot_heldout, plot_training
    from tables import print_tables

    catalog = Catalog.open(args.catalog)
    known = models_table(catalog)
    rounds_ = rounds(catalog, args.runs, known)
    base = rounds_[0]["base"] if rounds_ else "arith-v2-s"
    present = {m["name"] for m in known}
    matrix = scores(catalog, ["human", *[n for n in MATRIX if n in present]], baseline=base)
    mix = sample_mix(catalog, base)
    report = {
        "judge": JUDGE,
        "matrix": matrix,
        "checks": checks(matrix, base, mix),
        "rounds": rounds_,
        "arms": arms(catalog, known, base, matrix.get(base, {}), matrix),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    plot_heldout(report, args.out / "heldout.png")
    if report["arms"]:
        plot_arms(report, args.out / "arms.png")
    plot_training({f"round {r['round']}": args.runs / f"round-{r['round']}" / "metrics.jsonl" for r in rounds_},
                  args.out / "training.png")
    print_tables(Console(width=max(Console().width, 120)), report)
    print(f"wrote {args.out}/report.json, heldout.png, arms.png, training.png")


if __name__ == "__main__":
    main()
