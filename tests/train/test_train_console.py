"""What `tso-train fit` shows: its own lines only (no third-party progress bars, logs or
warnings), the truncated pairs, a label on each reference pass, and an end-of-fit summary; no
DeepSpeed op is compiled for a CPU fit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tso_train.engine import prepare_deepspeed_import
from tso_train.loop import FitConfig, fit

THIRD_PARTY_NOISE = ("Loading weights", "Writing model shards", "it/s]", "[WARNING]", "DeepSpeed", "built successfully",
                     "Warning:", "warnings.warn", "Setting accelerator")


def test_fit_console_holds_only_its_own_lines_and_a_summary(tmp_path, hh_snapshot, hh_model_dir, th):
    out = tmp_path / "run"
    extensions = tmp_path / "torch-extensions"
    env = {**th.env(), "TORCH_EXTENSIONS_DIR": str(extensions), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "tso_train.cli", "fit", str(hh_snapshot), "--model", str(hh_model_dir),
           "--out", str(out),
           "--loss", "dpo", "--parts", "2", "--epochs", "1", "--global-batch", "8", "--lr", "1e-3",
           "--max-length", "48"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in THIRD_PARTY_NOISE:
        assert noise not in proc.stdout + proc.stderr, noise
    summary = proc.stdout.strip().splitlines()
    assert len(summary) == 1, proc.stdout
    pattern = (r"done: 6 steps on (\d+) pairs \((\d+) truncated, (\d+) dropped\) in \d+ s; "
               r"last step: reward accuracy (\d\.\d\d), margin [+-]\d\.\d{3}; policy in (.*)/final")
    match = re.fullmatch(pattern, summary[0])
    assert match, summary[0]
    n_pairs, truncated, dropped = (int(match[i]) for i in (1, 2, 3))
    assert n_pairs + dropped == 48 and truncated > 0 and Path(match[5]) == out
    assert f"{n_pairs} pairs ({truncated} truncated to --max-length 48, {dropped} dropped)" in proc.stderr
    assert not extensions.exists() or not any(extensions.iterdir())  # no op was compiled


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def start(self, total: int, done: int = 0) -> None:
        self.events.append(("start", f"{done}/{total}"))

    def phase(self, text: str) -> None:
        self.events.append(("phase", text))

    def note(self, text: str) -> None:
        self.events.append(("note", text))

    def update(self, row: dict) -> None:
        self.events.append(("step", str(row["step"])))

    def stop(self) -> None:
        self.events.append(("stop", ""))


def test_each_reference_pass_is_labelled(tmp_path, hh_snapshot, hh_model_dir):
    sink = Recorder()
    fit(FitConfig(snapshot=str(hh_snapshot), model=str(hh_model_dir), out=str(tmp_path / "run"), loss="dpo", parts=2,
                  epochs=1, global_batch=8, lr=1e-3, save_every=0), progress=sink)
    assert sink.events[0] == ("note", "48 pairs (0 truncated to --max-length 1024, 0 dropped)")
    assert [e for e in sink.events if e[0] != "note"] == [
        ("start", "0/6"),
        ("phase", "part 1/2: reference log-probs of 24 pairs"), ("phase", "part 1/2: training"),
        ("step", "1"), ("step", "2"), ("step", "3"),
        ("phase", "part 2/2: reference log-probs of 24 pairs"), ("phase", "part 2/2: training"),
        ("step", "4"), ("step", "5"), ("step", "6"), ("stop", ""),
    ]


def test_deepspeed_op_cache_defaults_to_the_environment(monkeypatch):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    prepare_deepspeed_import()
    if sys.prefix != sys.base_prefix and os.access(sys.prefix, os.W_OK):
        assert os.environ["TORCH_EXTENSIONS_DIR"] == str(Path(sys.prefix) / "torch_extensions")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/somewhere/else")
    prepare_deepspeed_import()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == "/somewhere/else"  # the user's choice wins


def test_a_line_announces_an_op_build(tmp_path, monkeypatch):
    from tso_train.engine import op_build_notice

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert "CPU Adam" in op_build_notice(offload=True, on_gpu=True)
    (tmp_path / "cpu_adam").mkdir()
    (tmp_path / "cpu_adam" / "cpu_adam.so").write_bytes(b"")
    assert op_build_notice(offload=True, on_gpu=True) is None  # cached in this environment: nothing to say
    assert op_build_notice(offload=True, on_gpu=False) is None  # on CPU nothing is compiled
