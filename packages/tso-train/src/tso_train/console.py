"""What a `tso-train` command prints: its own lines only.

Third-party libraries print progress bars (transformers' "Loading weights", "Writing model
shards"), log lines and Python warnings a user did not ask for. The CLI turns them off before
those libraries are imported (an environment variable the user set wins), and shows tso-train's
own warnings as one line each, ``warning: …``.
"""

from __future__ import annotations

import os
import sys
import warnings


def quiet_third_party() -> None:
    """Silence transformers/huggingface_hub progress bars and advisory logs, and every Python
    warning not raised by tso_train itself; call before transformers or DeepSpeed is imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if not sys.warnoptions:  # `python -W ...` or PYTHONWARNINGS: the user asked for warnings
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=r"tso_train(\.|$)")
    warnings.showwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=file or sys.stderr, flush=True)


def fit_summary(summary: dict) -> str:
    """The last line of `tso-train fit`.

    >>> fit_summary({"steps": 32, "n_pairs": 256, "n_truncated": 3, "n_dropped": 0,  # doctest: +NORMALIZE_WHITESPACE
    ...              "seconds": 95.2, "out": "runs/r1",
    ...              "last": {"rewards/accuracies": 0.625, "rewards/margins": 0.0113}})
    'done: 32 steps on 256 pairs (3 truncated, 0 dropped) in 95 s; last step: reward accuracy 0.62, margin +0.011;
    policy in runs/r1/final'
    """
    last = summary.get("last") or {}
    tail = ""
    if "rewards/accuracies" in last:
        tail = f"; last step: reward accuracy {last['rewards/accuracies']:.2f}, margin {last['rewards/margins']:+.3f}"
    return (f"done: {summary['steps']} steps on {summary['n_pairs']} pairs ({summary['n_truncated']} truncated, "
            f"{summary['n_dropped']} dropped) in {summary['seconds']:.0f} s{tail}; policy in {summary['out']}/final")


def sft_summary(summary: dict) -> str:
    """The last line of `tso-train sft`.

    >>> sft_summary({"steps": 12, "n": 32, "n_dropped": 1, "seconds": 8.4, "out": "runs/j", "last": {"loss": 1.23456}})
    'done: 12 steps on 32 conversations (1 dropped) in 8 s; last step: loss 1.2346; model in runs/j/final'
    """
    last = summary.get("last") or {}
    tail = f"; last step: loss {last['loss']:.4f}" if "loss" in last else ""
    return (f"done: {summary['steps']} steps on {summary['n']} conversations ({summary['n_dropped']} dropped) "
            f"in {summary['seconds']:.0f} s{tail}; model in {summary['out']}/final")
