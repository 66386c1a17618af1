"""`tso-train plot`: legends and coloured twin axes, no line across a reference reset, plain
ticks, a gradient-weight axis fitted to its curve."""

from __future__ import annotations

import json

import matplotlib
import pytest
from click.testing import CliRunner

from tso_train.cli import cli
from tso_train.plot import grad_weight_figure, loss_figure, rewards_figure

matplotlib.use("Agg")


def dual_clip_rows(parts: int = 3, steps: int = 10) -> list[dict]:
    """Rows like a dual-clip run's: a loss near γ_w + γ_l = 30 moving by 1e-4 per step, σ(−h)
    falling from 0.5 by a few thousandths."""
    rows = []
    for s in range(1, parts * steps + 1):
        k = (s - 1) % steps
        rows.append({"step": s, "part": 1 + (s - 1) // steps, "loss": 30 - 1.4e-4 * k, "rewards/chosen": 1e-3 * k,
                     "rewards/rejected": -2e-3 * k, "rewards/accuracies": 0.5 + 0.04 * k,
                     "grad_weight": 0.5 - 4e-3 * k})
    return rows


def lines_of(ax) -> list:
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 0 and line.get_linestyle() != "--"]


@pytest.mark.parametrize("make", [rewards_figure, grad_weight_figure, loss_figure])
def test_no_curve_is_joined_across_a_reference_reset(make):
    import matplotlib.pyplot as plt

    rows = dual_clip_rows()
    part_of = {r["step"]: r["part"] for r in rows}
    fig = make(rows)
    data = [line for ax in fig.axes for line in lines_of(ax) if all(x in part_of for x in line.get_xdata())]
    assert data
    for line in data:
        assert len({part_of[x] for x in line.get_xdata()}) == 1, line.get_label()
    plt.close(fig)


def test_loss_figure_has_a_legend_and_coloured_twin_axes_with_plain_ticks():
    import matplotlib.pyplot as plt

    fig = loss_figure(dual_clip_rows())
    fig.canvas.draw()
    loss_ax, acc_ax = fig.axes
    legend = acc_ax.get_legend() or loss_ax.get_legend()
    assert legend is not None
    assert {t.get_text() for t in legend.get_texts()} == {"loss", "reward accuracy", "reference reset"}
    left, right = loss_ax.yaxis.label.get_color(), acc_ax.yaxis.label.get_color()
    assert left != right and left == loss_ax.get_lines()[0].get_color()
    assert loss_ax.yaxis.get_offset_text().get_text() == ""  # no "+3e1" offset
    labels = [t.get_text() for t in loss_ax.get_yticklabels() if t.get_text()]
    assert labels and all(float(x.replace("−", "-")) > 29 for x in labels)
    plt.close(fig)


def test_grad_weight_axis_shows_the_curve():
    import matplotlib.pyplot as plt

    rows = dual_clip_rows()
    fig = grad_weight_figure(rows)
    low, high = fig.axes[0].get_ylim()
    values = [r["grad_weight"] for r in rows]
    assert low <= min(values) and max(values) <= high
    assert (max(values) - min(values)) / (high - low) > 0.5  # the curve fills most of the axis (0-1 gave 4 %)
    plt.close(fig)


def test_plot_cli_writes_the_three_figures(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dual_clip_rows()))
    result = CliRunner().invoke(cli, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    for name in ("rewards.png", "grad_weight.png", "loss.png"):
        assert (run / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (run / "plots").iterdir() if p.name.startswith(".")]  # no temporary file left
