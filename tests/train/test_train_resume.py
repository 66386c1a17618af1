"""`--resume` refuses changed settings (each named with its old and new value, before any model
load), and run.json is written once per run. fit and sft share the unit (tso_train.resume)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tso_train.errors import TSOTrainError
from tso_train.loop import FitConfig
from tso_train.loop import check_before_load as check_fit
from tso_train.resume import write_run_record
from tso_train.sft import SFTConfig
from tso_train.sft import check_before_load as check_sft

U = lambda c: {"role": "user", "content": c}  # noqa: E731
A = lambda c: {"role": "assistant", "content": c}  # noqa: E731
PAIRS = [{"prompt": [U(f"Add {i} and 1.")], "chosen": [A(f"{i + 1}")], "rejected": [A(f"{i + 2}")]} for i in range(8)]


def _started_run(out: Path, fingerprint: dict) -> None:
    """A run directory as a started run leaves it: run.json, a checkpoint after step 1 (its
    manifest, a stand-in state file) and step 1's metrics row."""
    state = out / "checkpoints" / "step-1"
    state.mkdir(parents=True)
    (state / "mp_rank_00_model_states.pt").write_bytes(b"state")
    position = {"part": 0, "epoch": 0, "step": 1, "global_step": 1}
    (state / "tso-checkpoint.json").write_text(json.dumps({"files": {"mp_rank_00_model_states.pt": 5},
                                                           "position": position}))
    (out / "checkpoints" / "latest").write_text("step-1")
    (out / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.69}) + "\n")
    write_run_record(out, fingerprint, {})


# every setting that changes the result, with another value (loss-specific ones under their loss)
FIT_CHANGES = [
    ("lr", 2e-6, "--lr was 1e-06, now 2e-06"), ("beta", 0.2, "--beta was 0.1, now 0.2"),
    ("gamma_w", 5.0, "--gamma-w was 20.0, now 5.0"), ("gamma_l", 1.0, "--gamma-l was 10.0, now 1.0"),
    ("weight_decay", 0.0, "--weight-decay was 0.05, now 0.0"),
    ("adam_betas", (0.8, 0.9), "--adam-betas was 0.9,0.95, now 0.8,0.9"),
    ("adam_eps", 1e-6, "--adam-eps was 1e-08, now 1e-06"), ("warmup_ratio", 0.0, "--warmup-ratio was 0.1, now 0.0"),
    ("grad_clip", 0.5, "--grad-clip was 1.0, now 0.5"), ("zero", 3, "--zero was 0, now 3"),
    ("bf16", True, "--bf16 was off, now on"),
    ("offload", True, "--offload was off, now on"), ("max_length", 512, "--max-length was 1024, now 512"),
    ("max_length", None, "--max-length was 1024, now none"), ("parts", 2, "--parts was 3, now 2"),
    ("epochs", 1, "--epochs was 2, now 1"), ("global_batch", 4, "--global-batch was 8, now 4"),
    ("micro_batch", 2, "--micro-batch was 4, now 2"), ("seed", 1, "--seed was 43, now 1"),
    ("packing", False, "--packing was on, now off"), ("length_average", True, "--length-average was off, now on"),
    ("score_user_turns", True, "--score-user-turns was off, now on"), ("loss", "dpo", "--loss was dual-clip, now dpo"),
]


@pytest.mark.parametrize(("field", "value", "message"), FIT_CHANGES, ids=[f"{c[0]}={c[1]}" for c in FIT_CHANGES])
def test_fit_resume_refuses_each_changed_setting(tmp_path, th, tiny_model_dir, field, value, message):
    snapshot = th.write_snapshot(tmp_path / "s.parquet", PAIRS)
    base = FitConfig(snapshot=str(snapshot), model=str(tiny_model_dir), out=str(tmp_path / "run"), global_batch=8)
    _, fingerprint, fresh = check_fit(base, tmp_path / "run")
    assert fresh is None
    _started_run(tmp_path / "run", fingerprint)
    check_fit(dataclasses.replace(base, resume=True, save_every=7), tmp_path / "run")  # the same run: accepted
    also = {"zero": 1} if field == "offload" else {}  # offload needs ZeRO ≥ 1 (both changes are named)
    changed = dataclasses.replace(base, resume=True, **{field: value}, **also)
    with pytest.raises(TSOTrainError, match="was started with other settings") as err:
        check_fit(changed, tmp_path / "run")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("loss", "field", "value"), [("ipo", "ipo_tau", 0.5), ("cdpo", "cdpo_eps", 0.1)])
def test_fit_resume_refuses_a_changed_loss_parameter(tmp_path, th, tiny_model_dir, loss, field, value):
    snapshot = th.write_snapshot(tmp_path / "s.parquet", PAIRS)
    base = FitConfig(snapshot=str(snapshot), model=str(tiny_model_dir), out=str(tmp_path / "run"), global_batch=8,
                     loss=loss)
    _started_run(tmp_path / "run", check_fit(base, tmp_path / "run")[1])
    with pytest.raises(TSOTrainError, match=f"--{field.replace('_', '-')} was"):
        check_fit(dataclasses.replace(base, resume=True, **{field: value}), tmp_path / "run")


def test_fit_resume_refuses_another_model_or_snapshot(tmp_path, th, tiny_model_dir):
    import shutil

    snapshot = th.write_snapshot(tmp_path / "s.parquet", PAIRS)
    base = FitConfig(snapshot=str(snapshot), model=str(tiny_model_dir), out=str(tmp_path / "run"), global_batch=8)
    _started_run(tmp_path / "run", check_fit(base, tmp_path / "run")[1])
    other_model = shutil.copytree(tiny_model_dir, tmp_path / "model-copy")
    with pytest.raises(TSOTrainError, match=f"--model was .*, now {other_model}"):
        check_fit(dataclasses.replace(base, resume=True, model=str(other_model)), tmp_path / "run")
    plain = tmp_path / "plain.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ("prompt", "chosen", "rejected")
    pq.write_table(pa.table({c: pa.array([p[c] for p in PAIRS], type=th.MESSAGES) for c in columns}), plain)
    with pytest.raises(TSOTrainError, match="SNAPSHOT .* was snap-test, now [0-9a-f]{16}"):
        check_fit(dataclasses.replace(base, resume=True, snapshot=str(plain)), tmp_path / "run")


SFT_CHANGES = [("lr", 2e-5, "--lr was 1e-05, now 2e-05"), ("epochs", 2, "--epochs was 1, now 2"),
               ("warmup_ratio", 0.5, "--warmup-ratio was 0.1, now 0.5"), ("seed", 7, "--seed was 43, now 7"),
               ("max_length", 64, "--max-length was 1024, now 64"), ("zero", 2, "--zero was 0, now 2"),
               ("grad_clip", 0.0, "--grad-clip was 1.0, now 0.0"), ("adam_betas", (0.9, 0.999), "now 0.9,0.999")]


@pytest.mark.parametrize(("field", "value", "message"), SFT_CHANGES, ids=[c[0] for c in SFT_CHANGES])
def test_sft_resume_refuses_each_changed_setting(tmp_path, tiny_model_dir, field, value, message):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": [U(f"q{i}"), A(f"a{i}")]}) + "\n" for i in range(8)))
    base = SFTConfig(data=str(data), model=str(tiny_model_dir), out=str(tmp_path / "run"), global_batch=8)
    _started_run(tmp_path / "run", check_sft(base, tmp_path / "run")[1])
    with pytest.raises(TSOTrainError, match="was started with other settings") as err:
        check_sft(dataclasses.replace(base, resume=True, **{field: value}), tmp_path / "run")
    assert message in str(err.value)
    data.write_text(data.read_text() + json.dumps({"messages": [U("new"), A("row")]}) + "\n")
    with pytest.raises(TSOTrainError, match=r"DATA \(its content\) was"):
        check_sft(dataclasses.replace(base, resume=True), tmp_path / "run")


def test_fit_and_sft_fingerprint_their_shared_settings_alike(tmp_path, th, tiny_model_dir):
    """One unit for both commands: every engine setting they share is in both fingerprints."""
    snapshot = th.write_snapshot(tmp_path / "s.parquet", PAIRS)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [U("q"), A("a")]}) + "\n")
    fit_fp = check_fit(FitConfig(snapshot=str(snapshot), model=str(tiny_model_dir), out=str(tmp_path / "a"),
                                 global_batch=8),
                       tmp_path / "a")[1]
    sft_fp = check_sft(SFTConfig(data=str(data), model=str(tiny_model_dir), out=str(tmp_path / "b"), global_batch=8),
                       tmp_path / "b")[1]
    shared = {f.name for f in dataclasses.fields(FitConfig)} & {f.name for f in dataclasses.fields(SFTConfig)}
    # speed: the performance switches; the one a command can change (the heap trimming, from the
    # environment) changes no number, and the packing they default is fingerprinted resolved
    not_result_changing = {"out", "resume", "save_every", "on_step", "gradient_checkpointing", "data", "snapshot",
                           "speed"}
    assert shared - not_result_changing <= set(fit_fp) & set(sft_fp)


class _StopAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, row: dict) -> None:
        if row["step"] == self.step:
            raise KeyboardInterrupt


def test_run_json_is_written_once_and_a_resume_never_rewrites_it(tmp_path, th, tiny_model_dir):
    from tso_train.cli import cli
    from tso_train.loop import fit

    snapshot = th.write_snapshot(tmp_path / "s.parquet", PAIRS)
    out = tmp_path / "run"
    flags = dict(loss="dpo", parts=1, epochs=2, global_batch=4, micro_batch=4, lr=1e-3, save_every=1)
    with pytest.raises(KeyboardInterrupt):
        fit(FitConfig(snapshot=str(snapshot), model=str(tiny_model_dir), out=str(out), on_step=_StopAt(3), **flags))
    record = (out / "run.json").read_bytes()
    stamp = (out / "run.json").stat().st_mtime_ns
    assert json.loads(record)["fingerprint"]["lr"] == 1e-3
    args = ["fit", str(snapshot), "--model", str(tiny_model_dir), "--out", str(out), "--loss", "dpo", "--parts", "1",
            "--epochs", "2", "--global-batch", "4", "--micro-batch", "4", "--lr", "1e-3", "--save-every", "1"]
    refused = CliRunner().invoke(cli, [*args, "--lr", "5e-3", "--resume"])
    assert refused.exit_code == 2 and "--lr was 0.001, now 0.005" in refused.stderr
    resumed = CliRunner().invoke(cli, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "run.json").read_bytes() == record and (out / "run.json").stat().st_mtime_ns == stamp
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_resume_cuts_a_torn_last_metrics_line_left_by_a_kill(tmp_path, th, tiny_model_dir):
    """A kill in the middle of writing a row leaves it without its newline: that row is past the
    checkpoint, so the resume drops it and redoes the step (a torn row at or before the
    checkpoint's step is refused: see the bad-input corpus)."""
    from tso_train.loop import fit

    snapshot = th.write_snapshot(tmp_path / "s.parquet", PAIRS)
    out = tmp_path / "run"
    settings = dict(snapshot=str(snapshot), model=str(tiny_model_dir), out=str(out), loss="dpo", parts=1, epochs=2,
                    global_batch=4, micro_batch=4, lr=1e-3, save_every=2)
    with pytest.raises(KeyboardInterrupt):
        fit(FitConfig(on_step=_StopAt(3), **settings))
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines) + "\n" + lines[-1][:20])  # a half-written row 4 (no newline)
    fit(FitConfig(resume=True, **settings))
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [1, 2, 3, 4]
