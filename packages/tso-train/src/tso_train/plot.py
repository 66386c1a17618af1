"""`tso-train plot RUN_DIR`: the paper's Figures 3/4 (rewards) and 6 (gradient weight)."""

from __future__ import annotations

from pathlib import Path

from tso_train.errors import TSOTrainError
from tso_train.metrics import read_metrics


def part_boundaries(rows: list[dict]) -> list[int]:
    """Steps after which a new part (a reference reset) starts.

    >>> part_boundaries([{"step": 1, "part": 1}, {"step": 2, "part": 1}, {"step": 3, "part": 2}])
    [2]
    """
    return [a["step"] for a, b in zip(rows, rows[1:]) if b.get("part") != a.get("part")]


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise TSOTrainError(f"{run_dir}: no metrics.jsonl (is this a tso-train run directory?)")
    rows = read_metrics(path)
    if not rows or "rewards/chosen" not in rows[0]:
        raise TSOTrainError(f"{path}: no preference-training rows to plot")
    out_dir = Path(out) if out else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = [r["step"] for r in rows]
    bounds = part_boundaries(rows)

    def mark_parts(ax) -> None:
        for i, b in enumerate(bounds):
            ax.axvline(b + 0.5, color="grey", linestyle="--", linewidth=0.8,
                       label="reference reset" if i == 0 else None)

    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["rewards/chosen"] for r in rows], label="chosen reward $r_w$")
    ax.plot(steps, [r["rewards/rejected"] for r in rows], label="rejected reward $r_l$")
    mark_parts(ax)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(xlabel="optimiser step", ylabel="mean reward", title="Rewards per step (cf. TSO Figs. 3-4)")
    ax.legend()
    fig.tight_layout()
    written.append(out_dir / "rewards.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["grad_weight"] for r in rows], color="tab:purple", label=r"$\sigma(-h)$")
    mark_parts(ax)
    ax.set(xlabel="optimiser step", ylabel="gradient weight", ylim=(0, 1),
           title="DPO gradient weight per step (cf. TSO Fig. 6)")
    ax.legend()
    fig.tight_layout()
    written.append(out_dir / "grad_weight.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["loss"] for r in rows], label="loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["rewards/accuracies"] for r in rows], color="tab:green", label="accuracy")
    ax2.set_ylim(0, 1)
    mark_parts(ax)
    ax.set(xlabel="optimiser step", ylabel="loss", title="Loss and reward accuracy")
    ax2.set_ylabel("rewards/accuracies")
    fig.tight_layout()
    written.append(out_dir / "loss.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written
