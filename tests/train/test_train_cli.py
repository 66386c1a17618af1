"""The `tso-train` CLI: help with the paper's defaults, bad input → exit 2, multi-process runs,
kill -9 + --resume, sft and plot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from tso_train.cli import cli

PAPER_DEFAULTS = ["--beta FLOAT", "0.1", "--gamma-w", "20.0", "--gamma-l", "10.0", "--parts", "3", "--epochs",
                  "--global-batch", "256", "1e-06", "--weight-decay", "0.05", "0.9,0.95", "1e-08",
                  "--grad-clip", "1.0", "--seed", "43", "dual-clip"]


def test_fit_help_shows_the_paper_defaults():
    result = CliRunner().invoke(cli, ["fit", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for token in PAPER_DEFAULTS:
        assert token in text, token
    for token in ("[default: 3]", "[default: 2]", "[default: 256]", "[default: 43]", "deepspeed --num_gpus 8",
                  "--packing / --no-packing"):
        assert token in text, token


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, th, tiny_model_dir):
    snap = th.write_snapshot(tmp_path / "s.parquet", [{"prompt": [{"role": "user", "content": "q"}],
                                                      "chosen": [{"role": "assistant", "content": "a"}],
                                                      "rejected": [{"role": "assistant", "content": "b"}]}],
                             version="9")
    result = CliRunner().invoke(cli, ["fit", str(snap), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {snap}: snapshot schema version '9', this tso-train reads version '1'"]
    assert not (tmp_path / "o").exists()


def _run(cmd: list[str], env: dict, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


FIT = ["--loss", "dpo", "--parts", "1", "--epochs", "1", "--global-batch", "8", "--micro-batch", "2",
       "--lr", "1e-3", "--max-length", "256"]


@pytest.mark.slow
def test_two_process_torchrun_on_cpu_matches_one_process(tmp_path, hh_snapshot, hh_model_dir, th):
    import socket

    from tso_train.loop import FitConfig, fit

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = th.env()
    out2 = tmp_path / "two"
    proc = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                 "-m", "tso_train.cli", "fit", str(hh_snapshot), "--model", str(hh_model_dir), "--out", str(out2),
                 *FIT],
                env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows2 = [json.loads(x) for x in (out2 / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((out2 / "run.json").read_text())["world_size"] == 2
    rows1: list[dict] = []
    fit(FitConfig(snapshot=str(hh_snapshot), model=str(hh_model_dir), out=str(tmp_path / "one"), loss="dpo", parts=1,
                  epochs=1, global_batch=8, micro_batch=2, lr=1e-3, max_length=256, on_step=rows1.append))
    assert len(rows1) == len(rows2) == 6
    for a, b in zip(rows1, rows2):  # the same global batches: same metrics over both ranks
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
        assert a["rewards/accuracies"] == pytest.approx(b["rewards/accuracies"])


SLOW_FIT = """
import sys, time
from tso_train.loop import FitConfig, fit
fit(FitConfig(snapshot=sys.argv[1], model=sys.argv[2], out=sys.argv[3], loss="dual-clip", parts=2, epochs=2,
              global_batch=8, micro_batch=4, lr=1e-3, save_every=1, on_step=lambda row: time.sleep(0.2)))
"""


@pytest.mark.slow
def test_kill_9_then_resume_ends_with_the_same_weights(tmp_path, hh_snapshot, hh_model_dir, th):
    from transformers import AutoModelForCausalLM

    from tso_train.loop import FitConfig, fit

    env = th.env()
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FIT, str(hh_snapshot), str(hh_model_dir), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    try:  # kill in the middle of part 2 (48 pairs → 2 parts × 2 epochs × 3 steps)
        while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 8):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "part-2").exists() and (out / "part-1").exists()  # killed during part 2
    resumed = CliRunner().invoke(cli, ["fit", str(hh_snapshot), "--model", str(hh_model_dir), "--out", str(out),
                                       "--loss", "dual-clip", "--parts", "2", "--epochs", "2", "--global-batch", "8",
                                       "--micro-batch", "4", "--lr", "1e-3", "--save-every", "1", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["part"] for r in rows] == [1] * 6 + [2] * 6

    straight = tmp_path / "straight"
    fit(FitConfig(snapshot=str(hh_snapshot), model=str(hh_model_dir), out=str(straight), loss="dual-clip", parts=2,
                  epochs=2, global_batch=8, micro_batch=4, lr=1e-3, save_every=0))
    a = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(straight / "final").state_dict()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-5, diff


def test_sft_lowers_the_loss_on_its_data(tmp_path, tiny_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tso_train.sft import SFTConfig, sft

    convs = [[{"role": "user", "content": f"Rate answer {i}: the sky is blue."},
              {"role": "assistant", "content": f"The answer is accurate. Score: {i % 10}"}] for i in range(32)]
    data = tmp_path / "judge_sft.parquet"
    pq.write_table(pa.table({"messages": convs}), data)
    rows: list[dict] = []
    sft(SFTConfig(data=str(data), model=str(tiny_model_dir), out=str(tmp_path / "sft"), epochs=6, global_batch=16,
                  micro_batch=8, lr=3e-3, on_step=rows.append))
    assert len(rows) == 12
    assert rows[-1]["loss"] < 0.75 * rows[0]["loss"]
    from transformers import AutoModelForCausalLM

    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "final"), torch.nn.Module)


def test_sft_rejects_data_without_messages(tmp_path, tiny_model_dir):
    (tmp_path / "d.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    result = CliRunner().invoke(cli, ["sft", str(tmp_path / "d.jsonl"), "--model", str(tiny_model_dir),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'd.jsonl'}:1: field 'messages': no assistant message" in result.output


@pytest.mark.parametrize(("value", "expected"), [("none", None), ("None", None), ("512", 512)])
def test_max_length_none_is_the_explicit_no_limit(monkeypatch, value, expected):
    """`--max-length none` means no limit; 0 is refused (see the bad-input corpus), no longer a silent "none"."""
    import tso_train.loop

    seen = []
    monkeypatch.setattr(tso_train.loop, "fit", lambda cfg, progress=None: seen.append(cfg) or {
        "out": cfg.out, "steps": 0, "n_pairs": 0, "n_truncated": 0, "n_dropped": 0, "seconds": 0.0, "last": {}})
    result = CliRunner().invoke(cli, ["fit", "s.parquet", "--model", "m", "--out", "o", "--max-length", value])
    assert result.exit_code == 0, result.output
    assert seen[0].max_length == expected


class _Interrupted(Exception):
    pass


def test_sft_interrupted_then_resumed_ends_with_the_same_weights(tmp_path, tiny_model_dir):
    """`tso-train sft --resume` continues from the last engine checkpoint (mid-epoch here) and
    ends with the weights of an uninterrupted run with the same seed; metrics rows are not doubled."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoModelForCausalLM

    from tso_train.sft import SFTConfig, sft

    convs = [[{"role": "user", "content": f"Judge answer {i}: " + "the sky is blue. " * (i % 5)},
              {"role": "assistant", "content": f"Accurate. Score: {i % 10}" + "!" * (i % 7)}] for i in range(32)]
    data = tmp_path / "judge_sft.parquet"
    pq.write_table(pa.table({"messages": convs}), data)
    settings = dict(epochs=2, global_batch=8, micro_batch=4, lr=3e-3, warmup_ratio=0.25)  # 4 steps per epoch

    def stop_at_step_6(row: dict) -> None:
        if row["step"] == 6:
            raise _Interrupted

    out = tmp_path / "interrupted"
    with pytest.raises(_Interrupted):  # checkpoints at steps 3 and 6 would follow their rows: only step 3's exists
        sft(SFTConfig(data=str(data), model=str(tiny_model_dir), out=str(out), save_every=3, on_step=stop_at_step_6,
                      **settings))
    assert not (out / "final").exists() and (out / "checkpoints" / "step-3").is_dir()
    before = (out / "metrics.jsonl").read_text().splitlines()
    assert len(before) == 6
    resumed = CliRunner().invoke(cli, ["sft", str(data), "--model", str(tiny_model_dir), "--out", str(out),
                                       "--epochs", "2", "--global-batch", "8", "--micro-batch", "4", "--lr", "3e-3",
                                       "--warmup-ratio", "0.25", "--save-every", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines[:3] == before[:3]  # steps 1-3 were not redone (their timings would differ)
    rows = [json.loads(x) for x in lines]
    assert [r["step"] for r in rows] == list(range(1, 9))

    straight_rows: list[dict] = []
    straight = tmp_path / "straight"
    sft(SFTConfig(data=str(data), model=str(tiny_model_dir), out=str(straight), save_every=0,
                  on_step=straight_rows.append, **settings))
    for a, b in zip(rows, straight_rows):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["lr"] == pytest.approx(b["lr"])
    w_resumed = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    w_straight = AutoModelForCausalLM.from_pretrained(straight / "final").state_dict()
    diff = max(float((w_resumed[k] - w_straight[k]).abs().max()) for k in w_straight)
    assert diff < 1e-5, diff
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert max(float((w_straight[k] - initial[k]).abs().max()) for k in initial) > 1e-3  # it did train
