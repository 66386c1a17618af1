"""The leaderboard as files: CSV (one row per model) and a PNG, both written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path

from tso_data.eval.board import Leaderboard, finite_rows
from tso_data.shards import atomic_path


def write_csv(board: Leaderboard, path: Path) -> None:
    with atomic_path(path) as tmp:
        board.table.write_csv(tmp)


def write_plot(board: Leaderboard, path: Path) -> None:
    """Mean score ± standard error per model; with pairwise verdicts, also the win rate and
    the length-controlled win rate against the baseline (± standard error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = finite_rows(board.table)
    panels = [("score", "score_se", f"mean score ({board.judge}, {board.split})")]
    if "win_rate" in board.table.columns:
        panels.append(("win_rate", "standard_error", f"win rate vs {board.baseline} (%)"))
        panels.append(("lc_win_rate", "lc_standard_error", "length-controlled win rate (%)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.45 * len(rows) + 1.8), squeeze=False)
    names = [str(r["model"]) + (" (baseline)" if r["is_baseline"] else "") for r in rows]
    for ax, (value, error, title) in zip(axes[0], panels):
        values = [_number(r.get(value)) for r in rows]
        errors = [_number(r.get(error)) for r in rows]
        ax.barh(names, values, xerr=errors, alpha=0.8, capsize=3)
        ax.invert_yaxis()
        ax.set_title(title)
        if value != "score":
            ax.axvline(50, color="grey", linewidth=0.8, linestyle="--")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(float(value)) else 0.0
