"""The CPU example report's tables (rich), from the dict report.py builds."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pm(mean: float | None, se: float | None, sign: bool = False) -> str:
    if mean is None:
        return "-"
    return f"{mean:+.2f} ± {_fmt(se)}" if sign else f"{mean:.2f} ± {_fmt(se)}"


def _z(delta: float | None, se: float | None) -> str:
    return "-" if delta is None or not se else f"{delta / se:+.1f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def matrix_table(report: dict[str, Any]) -> Table:
    t = Table(title="held-out verifier score (1-10), greedy answers; Δ against the round-1 base, same prompts")
    for col in ("source", "mean ± se", "pass", "Δ paired ± se", "Δ/se"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for name, s in sorted(report["matrix"].items(), key=lambda kv: -kv[1]["mean"]):
        t.add_row(name, _pm(s["mean"], s["se"]), _pct(s["pass_rate"]), _pm(s["delta"], s["delta_se"], sign=True),
                  _z(s["delta"], s["delta_se"]))
    return t


def rounds_table(report: dict[str, Any]) -> Table:
    t = Table(title="TSO rounds: the base before, the trained policy after (held-out, same prompts)")
    for col in ("round", "base", "score", "τ", "pairs (matrix/base)", "fit acc.", "policy", "score", "pass",
                "Δ paired ± se", "Δ/se"):
        t.add_column(col, justify="right")
    for r in report["rounds"]:
        b, p = r["base_heldout"], r["policy_heldout"]
        t.add_row(str(r["round"]), r["base"], _fmt(b["mean"]), _fmt(r["tau"]),
                  f"{r['pairs']} ({r['pairs_matrix']}/{r['pairs_base']})", _fmt(r["fit"].get("final_accuracy")),
                  r["policy"], _fmt(p["mean"]), f"{_pct(b['pass_rate'])} → {_pct(p['pass_rate'])}",
                  _pm(p["delta"], p["delta_se"], sign=True), _z(p["delta"], p["delta_se"]))
    return t


def arms_table(report: dict[str, Any]) -> Table:
    t = Table(title="the paper's comparisons: one round from the round-1 base, same budget, Δ vs base over seeds")
    for col in ("arm", "seeds", "pairs", "score", "Δ mean", "seed sd", "typical se", "Δ per seed", "neg. distance"):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for a in report["arms"]:
        per_seed = "  ".join(f"{s['delta']:+.2f}" for s in a["seeds"])
        pairs = sorted({s["pairs"] for s in a["seeds"] if s["pairs"] is not None})
        t.add_row(a["arm"], str(len(a["seeds"])), "/".join(map(str, pairs)) or "-", _fmt(a["score_mean"]),
                  f"{a['delta_mean']:+.2f}", _fmt(a["delta_seed_sd"]), _fmt(a["delta_se_typical"]), per_seed,
                  _fmt(a.get("negative_distance")) if "negative_distance" in a else "-")
    return t


def checks_lines(report: dict[str, Any]) -> list[str]:
    c = report["checks"]
    mix = c.get("base_sample_mix") or {}
    return [
        f"matrix order: newest-largest above the base: {c['newest_largest_above_base']}; "
        f"base above every older or smaller cell: {c['base_above_older_or_smaller']}",
        f"round-1 base: held-out pass rate {_pct(c['base_pass_rate'])}; its T=0.8 samples on "
        f"{mix.get('prompts', 0)} train prompts: {_pct(mix.get('right_share'))} right, "
        f"{_pct(mix.get('mixed_share'))} of prompts with both right and wrong answers",
    ]


def print_tables(console: Console, report: dict[str, Any]) -> None:
    console.print(matrix_table(report))
    for line in checks_lines(report):
        console.print(line)
    console.print(rounds_table(report))
    if report["arms"]:
        console.print(arms_table(report))
