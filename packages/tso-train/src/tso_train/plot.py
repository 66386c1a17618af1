"""`tso-train plot RUN_DIR`: the paper's Figures 3/4 (rewards) and 6 (gradient weight), and the
loss with the reward accuracy.

Each part starts at a reference reset, where the rewards jump back to 0 and σ(−h) to 0.5, so a
curve is drawn part by part (never joined across a reset) and the resets are marked. Ticks are
plain numbers (no "+3e1"-style offsets); the gradient weight gets an axis fitted to its values.
"""

from __future__ import annotations

from pathlib import Path

from tso_train.errors import TSOTrainError
from tso_train.metrics import read_metrics

PLOTTED = ("step", "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "grad_weight")
LOSS_COLOUR, ACCURACY_COLOUR = "tab:blue", "tab:green"


def part_boundaries(rows: list[dict]) -> list[int]:
    """Steps after which a new part (a reference reset) starts.

    >>> part_boundaries([{"step": 1, "part": 1}, {"step": 2, "part": 1}, {"step": 3, "part": 2}])
    [2]
    """
    return [a["step"] for a, b in zip(rows, rows[1:]) if b.get("part") != a.get("part")]


def segments(rows: list[dict], key: str) -> list[tuple[list[int], list[float]]]:
    """(steps, values) of ``key`` for each part, in order.

    >>> segments([{"step": 1, "part": 1, "x": 0.5}, {"step": 2, "part": 1, "x": 0.4},
    ...           {"step": 3, "part": 2, "x": 0.5}], "x")
    [([1, 2], [0.5, 0.4]), ([3], [0.5])]
    """
    out: list[tuple[list[int], list[float]]] = []
    for i, r in enumerate(rows):
        if i == 0 or r.get("part") != rows[i - 1].get("part"):
            out.append(([], []))
        out[-1][0].append(r["step"])
        out[-1][1].append(r[key])
    return out


def check_rows(path: Path, rows: list[dict]) -> None:
    """Every row holds a number for each plotted metric; else one line naming the line."""
    if not rows:
        raise TSOTrainError(f"{path}: no rows to plot")
    if "rewards/chosen" not in rows[0]:
        raise TSOTrainError(f"{path}: no preference-training rows to plot (an sft run?)")
    for n, row in enumerate(rows, start=1):
        for key in PLOTTED:
            value = row.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TSOTrainError(f"{path}: row {n}: field '{key}': {'missing' if value is None else repr(value)}, "
                                    "expected a number")


def _plain_ticks(ax) -> None:
    from matplotlib.ticker import ScalarFormatter

    fmt = ScalarFormatter(useOffset=False)
    fmt.set_powerlimits((-4, 5))
    ax.yaxis.set_major_formatter(fmt)


def _mark_resets(ax, bounds: list[int]) -> None:
    for i, b in enumerate(bounds):
        ax.axvline(b + 0.5, color="grey", linestyle="--", linewidth=0.8, label="reference reset" if i == 0 else None)


def _plot_parts(ax, rows: list[dict], key: str, **style) -> None:
    for i, (x, y) in enumerate(segments(rows, key)):
        ax.plot(x, y, marker="." if len(x) == 1 else None, **{**style, "label": style.get("label") if i == 0 else None})


def rewards_figure(rows: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    _plot_parts(ax, rows, "rewards/chosen", color="tab:blue", label="chosen reward $r_w$")
    _plot_parts(ax, rows, "rewards/rejected", color="tab:red", label="rejected reward $r_l$")
    _mark_resets(ax, part_boundaries(rows))
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(xlabel="optimiser step", ylabel="mean reward", title="Rewards per step (cf. TSO Figs. 3-4)")
    _plain_ticks(ax)
    ax.legend()
    fig.tight_layout()
    return fig


def grad_weight_figure(rows: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    _plot_parts(ax, rows, "grad_weight", color="tab:purple", label=r"$\sigma(-h)$")
    _mark_resets(ax, part_boundaries(rows))
    values = [r["grad_weight"] for r in rows]
    low, high = min(values), max(values)
    pad = max((high - low) * 0.1, 1e-3)
    ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))  # fitted to the curve, inside [0, 1]
    ax.set(xlabel="optimiser step", ylabel="gradient weight", title="DPO gradient weight per step (cf. TSO Fig. 6)")
    _plain_ticks(ax)
    ax.legend()
    fig.tight_layout()
    return fig


def loss_figure(rows: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    _plot_parts(ax, rows, "loss", color=LOSS_COLOUR, label="loss")
    acc_ax = ax.twinx()
    _plot_parts(acc_ax, rows, "rewards/accuracies", color=ACCURACY_COLOUR, label="reward accuracy")
    acc_ax.set_ylim(-0.02, 1.02)
    _mark_resets(ax, part_boundaries(rows))
    ax.set(xlabel="optimiser step", title="Loss and reward accuracy")
    ax.set_ylabel("loss", color=LOSS_COLOUR)
    acc_ax.set_ylabel("reward accuracy", color=ACCURACY_COLOUR)
    ax.tick_params(axis="y", colors=LOSS_COLOUR)
    acc_ax.tick_params(axis="y", colors=ACCURACY_COLOUR)
    _plain_ticks(ax)
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = acc_ax.get_legend_handles_labels()
    acc_ax.legend(handles + more, labels + more_labels, loc="best")
    fig.tight_layout()
    return fig


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write rewards.png, grad_weight.png and loss.png; bad metrics are one line before any file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise TSOTrainError(f"{run_dir}: no metrics.jsonl (is this a tso-train run directory?)")
    rows = read_metrics(path)
    check_rows(path, rows)
    out_dir = Path(out) if out else run_dir / "plots"
    if out_dir.exists() and not out_dir.is_dir():
        raise TSOTrainError(f"--out {out_dir}: exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in (("rewards.png", rewards_figure), ("grad_weight.png", grad_weight_figure),
                       ("loss.png", loss_figure)):
        fig = make(rows)
        written.append(out_dir / name)
        tmp = out_dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=120)
        tmp.replace(written[-1])
        plt.close(fig)
    return written
