"""The CPU example report's figures: held-out score per round, the arms as paired deltas,
and the paper's Figures 3, 4 and 6 (rewards and gradient weight per step) from the real fits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heldout(report: dict[str, Any], path: Path) -> None:
    """Held-out score of the round-1 base and each round's policy (± se), with the matrix cells
    as reference lines, on an axis that spans the data (not 1–10)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rounds = report["rounds"]
    if rounds:
        points = [(rounds[0]["base"], rounds[0]["base_heldout"])] + [(r["policy"], r["policy_heldout"]) for r in rounds]
        xs = list(range(len(points)))
        ax.errorbar(xs, [p[1]["mean"] for p in points], yerr=[p[1]["se"] for p in points], fmt="o-", color="black",
                    capsize=4, linewidth=2, label="round-1 base, then each round's policy (± se)")
        for x, r in zip(xs[1:], rounds):
            d = r["policy_heldout"]
            ax.annotate(f"Δ {d['delta']:+.2f} ± {d['delta_se']:.2f}", (x, d["mean"]), textcoords="offset points",
                        xytext=(0, 10), ha="center", fontsize=8)
        ax.set_xticks(xs, ["base"] + [f"after round {r['round']}" for r in rounds])
    styles = {"arith-v1-s": ":", "arith-v1-l": "-.", "arith-v2-l": "--"}
    for i, (name, style) in enumerate(styles.items()):
        if name in report["matrix"]:
            ax.axhline(report["matrix"][name]["mean"], linestyle=style, color=f"C{i}", label=f"{name} (matrix cell)")
    ax.set_ylabel("held-out verifier score (1-10)")
    ax.set_title("TSO rounds on a CPU testbed (500 held-out prompts, greedy)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_arms(report: dict[str, Any], path: Path) -> None:
    """Each arm's paired difference to the round-1 base: bar = mean over seeds, whisker = the
    typical paired standard error of one seed, dots = single seeds."""
    plt = _pyplot()
    arms = sorted(report["arms"], key=lambda a: a["delta_mean"])
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(arms) + 2), 4.2))
    xs = list(range(len(arms)))
    colors = ["tab:green" if a["arm"] == "tso" else "tab:blue" for a in arms]
    ax.bar(xs, [a["delta_mean"] for a in arms], yerr=[a["delta_se_typical"] for a in arms], color=colors, alpha=0.6,
           capsize=4, label="mean over seeds (± one seed's paired se)")
    for x, a in zip(xs, arms):
        ax.scatter([x] * len(a["seeds"]), [s["delta"] for s in a["seeds"]], color="black", s=12, zorder=3,
                   label="one seed" if x == 0 else None)
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set_xticks(xs, [a["arm"] for a in arms], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("held-out score − round-1 base (same prompts)")
    ax.set_title("the paper's comparisons: one round, same budget")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training(runs: dict[str, Path], path: Path) -> None:
    """Per fit (one row each): mean chosen and rejected rewards per step (paper Figures 3/4) and
    the DPO gradient weight σ(−h) (Figure 6), with the reference resets (part starts) marked
    and no line drawn across a reset."""
    plt = _pyplot()
    runs = {name: p for name, p in runs.items() if p.is_file()}
    if not runs:
        return
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 2.6 * len(runs)), squeeze=False)
    for (name, metrics), (ax_r, ax_w) in zip(runs.items(), axes):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "rewards/chosen" in r]
        for part in sorted({r["part"] for r in rows}):
            seg = [r for r in rows if r["part"] == part]
            steps = [r["step"] for r in seg]
            first = part == rows[0]["part"]
            ax_r.plot(steps, [r["rewards/chosen"] for r in seg], color="tab:green",
                      label="chosen r_w" if first else None)
            ax_r.plot(steps, [r["rewards/rejected"] for r in seg], color="tab:red",
                      label="rejected r_l" if first else None)
            ax_w.plot(steps, [r["grad_weight"] for r in seg], color="tab:blue", label="σ(−h)" if first else None)
            for ax in (ax_r, ax_w):
                ax.axvline(steps[0] - 0.5, color="grey", linestyle=":", linewidth=1,
                           label="reference reset" if first and ax is ax_w else None)
        ax_r.axhline(0.0, color="grey", linewidth=0.8)
        ax_r.set_ylabel(f"{name}\nreward (β·log-ratio)")
        ax_w.set_ylabel("gradient weight")
        for ax in (ax_r, ax_w):
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.legend(fontsize=7, loc="best")
    axes[0][0].set_title("mean rewards per step (paper Figs. 3-4)")
    axes[0][1].set_title("DPO gradient weight σ(−h) per step (paper Fig. 6)")
    for ax in axes[-1]:
        ax.set_xlabel("optimiser step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
