"""Bad input to `tso-train fit`, `sft`, `plot` and `tiny-model`, table-driven: every case exits 2 with one line
naming the flag/file/row, loads no model and changes no file (see train_harness.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

_spec = importlib.util.spec_from_file_location("train_harness", Path(__file__).with_name("train_harness.py"))
h = sys.modules.setdefault("train_harness", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(h)
Case, A, U = h.Case, h.A, h.U


def _pairs_with(change) -> list[dict]:
    pairs = h.good_pairs()
    change(pairs)
    return pairs


def _set(pairs: list[dict], row: int, **fields) -> None:
    pairs[row].update(fields)


FIT_FLAGS = [  # (flag, value, what the message must say)
    ("--epochs", "0", "must be a whole number ≥ 1"),
    ("--epochs", "-1", "must be a whole number ≥ 1"),
    ("--beta", "-0.1", "must be a finite number > 0"),
    ("--beta", "0", "must be a finite number > 0"),
    ("--beta", "nan", "must be a finite number > 0"),
    ("--lr", "-1", "must be a finite number > 0"),
    ("--lr", "nan", "must be a finite number > 0"),
    ("--lr", "inf", "must be a finite number > 0"),
    ("--lr", "0", "must be a finite number > 0"),
    ("--max-length", "0", "'none' for no limit"),
    ("--max-length", "-5", "'none' for no limit"),
    ("--warmup-ratio", "2", "between 0 and 1"),
    ("--warmup-ratio", "-0.1", "between 0 and 1"),
    ("--grad-clip", "-1", "0 turns clipping off"),
    ("--grad-clip", "nan", "0 turns clipping off"),
    ("--gamma-w", "-1", "≥ 0"),
    ("--gamma-l", "nan", "≥ 0"),
    ("--ipo-tau", "0", "> 0"),
    ("--cdpo-eps", "0.5", "[0, 0.5)"),
    ("--cdpo-eps", "-0.1", "[0, 0.5)"),
    ("--parts", "0", "whole number ≥ 1"),
    ("--global-batch", "0", "whole number ≥ 1"),
    ("--micro-batch", "0", "whole number ≥ 1"),
    ("--weight-decay", "-0.01", "≥ 0"),
    ("--adam-betas", "0.9", "like 0.9,0.95"),
    ("--adam-betas", "1.0,0.95", "two numbers in [0, 1)"),
    ("--adam-eps", "0", "> 0"),
    ("--seed", "-1", "[0, 2^63)"),
    ("--save-every", "-1", "≥ 0"),
]

CASES = [
    *[Case(f"fit {flag} {value}", "fit", lambda ws, f=flag, v=value: h.fit_args(ws, f, v), (f"{flag} {value}", must))
      for flag, value, must in FIT_FLAGS],
    Case("fit --max-length abc", "fit", lambda ws: h.fit_args(ws, "--max-length", "abc"), ("--max-length", "'abc'")),
    Case("fit --epochs 1.5", "fit", lambda ws: h.fit_args(ws, "--epochs", "1.5"), ("--epochs", "1.5")),
    Case("fit --zero 4", "fit", lambda ws: h.fit_args(ws, "--zero", "4"), ("--zero", "4")),
    Case("fit --loss hinge", "fit", lambda ws: h.fit_args(ws, "--loss", "hinge"), ("--loss", "hinge")),
    Case("fit --offload at ZeRO 0", "fit", lambda ws: h.fit_args(ws, "--offload"), ("--offload needs --zero 1, 2 or 3",)),
    Case("fit batch not divisible", "fit", lambda ws: h.fit_args(ws, "--global-batch", "6"),
         ("--global-batch 6 is not divisible by --micro-batch 4",)),
    Case("fit more parts than pairs", "fit", lambda ws: h.fit_args(ws, "--parts", "9"), ("--parts 9", "8 pair(s)")),
    Case("fit --model missing", "fit", lambda ws: h.fit_args(ws, "--model", ws.root / "nope"), ("--model", "no such directory")),
    Case("fit --model a file", "fit", lambda ws: h.fit_args(ws, "--model", ws.snapshot), ("--model", "a file")),
    Case("fit --model dir without config", "fit", lambda ws: h.fit_args(ws, "--model", ws.run / "checkpoints"),
         ("--model", "no config.json")),
    Case("fit deepspeed config not JSON", "fit", lambda ws: h.fit_args(ws, "--deepspeed-config", ws.root / "ds.json"),
         ("ds.json: cannot read DeepSpeed config",), damage=lambda ws: (ws.root / "ds.json").write_text("{stage: 2")),
    Case("fit deepspeed config batch disagrees", "fit", lambda ws: h.fit_args(ws, "--deepspeed-config", ws.root / "ds.json"),
         ("ds.json: batch sizes disagree",), damage=lambda ws: (ws.root / "ds.json").write_text('{"train_batch_size": 64}')),
    # the snapshot
    Case("fit snapshot missing", "fit", lambda ws: h.fit_args(ws, snapshot=ws.root / "none.parquet"),
         ("none.parquet: no such snapshot file",)),
    Case("fit snapshot not Parquet", "fit", lambda ws: h.fit_args(ws), ("snap.parquet: not a Parquet file",),
         damage=lambda ws: ws.snapshot.write_text("prompt,chosen,rejected\n")),
    Case("fit snapshot schema version", "fit", lambda ws: h.fit_args(ws), ("snapshot schema version '7'",),
         damage=lambda ws: h.write_snapshot(ws.snapshot, h.good_pairs(), version="7")),
    Case("fit snapshot missing column", "fit", lambda ws: h.fit_args(ws), ("missing column(s) kind",),
         damage=lambda ws: h.write_snapshot(ws.snapshot, h.good_pairs(), drop=("kind",))),
    Case("fit chosen equals rejected", "fit", lambda ws: h.fit_args(ws), ("row 3: field 'rejected': equals 'chosen'",),
         damage=lambda ws: h.write_snapshot(ws.snapshot, _pairs_with(lambda p: _set(p, 2, rejected=p[2]["chosen"])))),
    Case("fit prompt holds an answer", "fit", lambda ws: h.fit_args(ws), ("row 1: field 'prompt'",),
         damage=lambda ws: h.write_snapshot(ws.snapshot, _pairs_with(lambda p: _set(p, 0, prompt=[A("hi")])))),
    Case("fit duplicate pair ids", "fit", lambda ws: h.fit_args(ws), ("row 2: field 'pair_id': 'dup' repeats row 1",),
         damage=lambda ws: _duplicate_ids(ws.snapshot)),
    # the run directory and --resume
    Case("fit over a run without --resume", "fit", lambda ws: h.fit_args(ws, out=ws.run), ("already holds a run", "--resume")),
    Case("fit --resume without checkpoint", "fit", lambda ws: h.fit_args(ws, "--resume"), ("--resume: no checkpoint",)),
    Case("fit --resume --lr changed", "fit", lambda ws: h.resume_args(ws, "--lr", "2e-3"), ("--lr was 0.001, now 0.002",)),
    Case("fit --resume --beta changed", "fit", lambda ws: h.resume_args(ws, "--beta", "0.2"), ("--beta was 0.1, now 0.2",)),
    Case("fit --resume --loss changed", "fit", lambda ws: h.resume_args(ws, "--loss", "ipo"),
         ("--loss was dpo, now ipo", "--ipo-tau was unset, now 0.2")),
    Case("fit --resume --weight-decay changed", "fit", lambda ws: h.resume_args(ws, "--weight-decay", "0"),
         ("--weight-decay was 0.05, now 0.0",)),
    Case("fit --resume --adam-betas changed", "fit", lambda ws: h.resume_args(ws, "--adam-betas", "0.9,0.99"),
         ("--adam-betas was 0.9,0.95, now 0.9,0.99",)),
    Case("fit --resume --warmup-ratio changed", "fit", lambda ws: h.resume_args(ws, "--warmup-ratio", "0.5"),
         ("--warmup-ratio was 0.1, now 0.5",)),
    Case("fit --resume --grad-clip changed", "fit", lambda ws: h.resume_args(ws, "--grad-clip", "0.5"),
         ("--grad-clip was 1.0, now 0.5",)),
    Case("fit --resume --zero changed", "fit", lambda ws: h.resume_args(ws, "--zero", "2"), ("--zero was 0, now 2",)),
    Case("fit --resume --bf16", "fit", lambda ws: h.resume_args(ws, "--bf16"), ("--bf16 was off, now on",)),
    Case("fit --resume --seed changed", "fit", lambda ws: h.resume_args(ws, "--seed", "1"), ("--seed was 43, now 1",)),
    Case("fit --resume --max-length changed", "fit", lambda ws: h.resume_args(ws, "--max-length", "none"),
         ("--max-length was 128, now none",)),
    Case("fit --resume another model", "fit", lambda ws: h.resume_args(ws, "--model", ws.run / "part-1"),
         ("--model was", "now {ws}/run/part-1")),
    Case("fit --resume another snapshot", "fit", lambda ws: h.resume_args(ws, snapshot=ws.other_snapshot),
         ("SNAPSHOT", "was snap-test, now")),
    Case("fit --resume half-written metrics line", "fit", lambda ws: h.resume_args(ws),
         ("metrics.jsonl:1: not a JSON metrics row",), damage=lambda ws: _tear_first_metrics_line(ws.run)),
    Case("fit --resume metrics rows missing", "fit", lambda ws: h.resume_args(ws),
         ("metrics.jsonl: holds steps 1, but the checkpoint is at step 2",),
         damage=lambda ws: h.truncate_file(ws.run / "metrics.jsonl", len((ws.run / "metrics.jsonl").read_text().splitlines()[0]) + 1)),
    Case("fit --resume truncated checkpoint", "fit", lambda ws: h.resume_args(ws),
         ("mp_rank_00_model_states.pt: truncated or changed checkpoint file",),
         damage=lambda ws: h.truncate_file(h.only_checkpoint_file(ws.run), -1000)),
    Case("fit --resume latest names nothing", "fit", lambda ws: h.resume_args(ws), ("names 'step-99'",),
         damage=lambda ws: (ws.run / "checkpoints" / "latest").write_text("step-99")),
    Case("fit --resume without run.json", "fit", lambda ws: h.resume_args(ws), ("run.json: missing",),
         damage=lambda ws: (ws.run / "run.json").unlink()),
    Case("fit --resume damaged run.json", "fit", lambda ws: h.resume_args(ws), ("run.json: no readable 'fingerprint'",),
         damage=lambda ws: h.truncate_file(ws.run / "run.json", 40)),
    # sft
    Case("sft --epochs 0", "sft", lambda ws: h.sft_args(ws, "--epochs", "0"), ("--epochs 0", "≥ 1")),
    Case("sft --lr nan", "sft", lambda ws: h.sft_args(ws, "--lr", "nan"), ("--lr nan", "finite")),
    Case("sft --max-length 0", "sft", lambda ws: h.sft_args(ws, "--max-length", "0"), ("--max-length 0",)),
    Case("sft --warmup-ratio 2", "sft", lambda ws: h.sft_args(ws, "--warmup-ratio", "2"), ("--warmup-ratio 2",)),
    Case("sft --grad-clip -1", "sft", lambda ws: h.sft_args(ws, "--grad-clip", "-1"), ("--grad-clip -1",)),
    Case("sft data missing", "sft", lambda ws: h.sft_args(ws, data=ws.root / "none.jsonl"), ("none.jsonl: no such file",)),
    Case("sft JSONL bad line", "sft", lambda ws: h.sft_args(ws, data=ws.root / "d.jsonl"), ("d.jsonl:2: not JSON",),
         damage=lambda ws: (ws.root / "d.jsonl").write_text(_jsonl_line() + "{oops\n")),
    Case("sft JSONL messages not a list", "sft", lambda ws: h.sft_args(ws, data=ws.root / "d.jsonl"),
         ("d.jsonl:1: field 'messages': not a list",), damage=lambda ws: (ws.root / "d.jsonl").write_text('{"messages": 5}\n')),
    Case("sft JSONL no assistant", "sft", lambda ws: h.sft_args(ws, data=ws.root / "d.jsonl"),
         ("d.jsonl:2: field 'messages': no assistant message",),
         damage=lambda ws: (ws.root / "d.jsonl").write_text(_jsonl_line() + json.dumps({"messages": [U("hi")]}) + "\n")),
    Case("sft Parquet bad role", "sft", lambda ws: h.sft_args(ws), ("sft.parquet: row 1: field 'messages': bad message",),
         damage=lambda ws: _bad_role_parquet(ws.sft_data)),
    Case("sft over a run without --resume", "sft", lambda ws: h.sft_args(ws, out=ws.sft_run), ("already holds a run",)),
    Case("sft --resume --lr changed", "sft", lambda ws: h.sft_args(ws, "--lr", "5e-4", "--resume", out=ws.sft_run),
         ("--lr was 0.001, now 0.0005",)),
    Case("sft --resume other data", "sft", lambda ws: h.sft_args(ws, "--resume", data=ws.root / "d.jsonl", out=ws.sft_run),
         ("DATA (its content) was",), damage=lambda ws: (ws.root / "d.jsonl").write_text(_jsonl_line())),
    Case("sft --resume truncated checkpoint", "sft", lambda ws: h.sft_args(ws, "--resume", out=ws.sft_run),
         ("truncated or changed checkpoint file",), damage=lambda ws: h.truncate_file(h.only_checkpoint_file(ws.sft_run), 100)),
    # plot
    Case("plot malformed metrics line", "plot", lambda ws: ["plot", str(ws.run)], ("metrics.jsonl:2: not a JSON metrics row",),
         damage=lambda ws: _append_to_first_line(ws.run / "metrics.jsonl", "\n{\"step\": 2, \"loss\": ")),
    Case("plot row without a metric", "plot", lambda ws: ["plot", str(ws.run)], ("row 1: field 'grad_weight': missing",),
         damage=lambda ws: _drop_metric(ws.run / "metrics.jsonl", "grad_weight")),
    Case("plot row without a step", "plot", lambda ws: ["plot", str(ws.run)], ("metrics.jsonl:1: not a metrics row",),
         damage=lambda ws: _drop_metric(ws.run / "metrics.jsonl", "step")),
    Case("plot no metrics.jsonl", "plot", lambda ws: ["plot", str(ws.root)], ("no metrics.jsonl",)),
    Case("plot run directory missing", "plot", lambda ws: ["plot", str(ws.root / "nope")], ("nope", "does not exist")),
    Case("plot an sft run", "plot", lambda ws: ["plot", str(ws.sft_run)], ("no preference-training rows",)),
    Case("plot --out is a file", "plot", lambda ws: ["plot", str(ws.run), "--out", str(ws.snapshot)],
         ("--out", "snap.parquet", "is a file")),
    # tiny-model
    Case("tiny-model --hidden-size 12", "tiny-model", lambda ws: ["tiny-model", str(ws.out), "--hidden-size", "12"],
         ("--hidden-size 12", "multiple of 8")),
    Case("tiny-model --layers 0", "tiny-model", lambda ws: ["tiny-model", str(ws.out), "--layers", "0"], ("--layers", "0")),
]


def _jsonl_line() -> str:
    return json.dumps({"messages": [U("Rate it."), A("Score: 3")]}) + "\n"


def _duplicate_ids(path: Path) -> None:
    import pyarrow.parquet as pq

    h.write_snapshot(path, h.good_pairs())
    table = pq.read_table(path)
    meta = pq.read_metadata(path).metadata
    ids = ["dup", "dup"] + table.column("pair_id").to_pylist()[2:]
    table = table.set_column(table.schema.get_field_index("pair_id"), "pair_id", [ids])
    pq.write_table(table.replace_schema_metadata({k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"tso.")}),
                   path)


def _bad_role_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"messages": [[{"role": "robot", "content": "beep"}, A("ok")]]}), path)


def _tear_first_metrics_line(run: Path) -> None:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0][: len(lines[0]) // 2] + "\n" + "\n".join(lines[1:]) + "\n")


def _append_to_first_line(path: Path, text: str) -> None:
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + text + "\n" + "\n".join(lines[1:]) + "\n")


def _drop_metric(path: Path, key: str) -> None:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0].pop(key)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def templates(tmp_path_factory, tiny_model_dir) -> Path:
    return h.build_templates(tmp_path_factory.mktemp("bad-input-train"), tiny_model_dir)


@pytest.fixture()
def no_model_load(monkeypatch):
    """A bad input must be refused before any model is loaded: loading one fails the test. The
    CLI quiets third-party libraries through environment variables: they are restored after."""
    import os

    import tso_train.engine
    import tso_train.loop
    import tso_train.sft

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(tso_train.engine, "load_causal_lm", refuse)
    monkeypatch.setattr(tso_train.loop, "start_training_process", refuse)
    monkeypatch.setattr(tso_train.sft, "start_training_process", refuse)
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_the_corpus_is_large_enough():
    by_command = {c: sum(case.command == c for case in CASES) for c in ("fit", "sft", "plot")}
    assert len(CASES) >= 40 and min(by_command.values()) >= 5, by_command
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_loaded_nothing_changed(case, templates, tiny_model_dir, tmp_path, no_model_load):
    from tso_train.cli import cli

    ws = h.make_workspace(templates, tmp_path / "ws", tiny_model_dir)
    if case.damage is not None:
        case.damage(ws)
    before = h.tree_hashes(ws.root, ws.model)
    result = CliRunner().invoke(cli, case.args(ws))
    h.check_refused(result, ws, before, case)
