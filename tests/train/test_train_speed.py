"""The performance switches (tso_train.speed): every measure off gives the numbers of the
defaults, and only the command turns a measure on (docs/design.md, 2. Architecture)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tso_train.errors import TSOTrainError
from tso_train.loop import FitConfig, fit
from tso_train.speed import TRIM_HEAP_OFF_VARIABLE, SpeedSwitches, apply_model_switches, heap_trimmer


def _fit(tmp_path: Path, snapshot: Path, model: Path, name: str, speed: SpeedSwitches) -> tuple[list[dict], Path]:
    rows: list[dict] = []
    cfg = FitConfig(snapshot=str(snapshot), model=str(model), out=str(tmp_path / name), loss="dpo", parts=2, epochs=1,
                    global_batch=8, micro_batch=4, lr=1e-3, save_every=0, on_step=rows.append, speed=speed)
    return rows, Path(fit(cfg)["out"]) / "final"


@pytest.mark.slow
def test_every_switch_off_trains_like_the_defaults(tmp_path, hh_snapshot, hh_model_dir):
    """The plain paths (padded micro-batches, autograd's MLP, foreach AdamW, DeepSpeed's own
    all-reduce, no heap trimming) and the fast ones: the same metrics step for step and the same
    weights, up to the summation order."""
    fast, fast_out = _fit(tmp_path, hh_snapshot, hh_model_dir, "fast", SpeedSwitches())
    plain, plain_out = _fit(tmp_path, hh_snapshot, hh_model_dir, "plain", SpeedSwitches.readable())
    assert len(fast) == len(plain) >= 4
    for a, b in zip(fast, plain):
        for name in ("loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "grad_norm"):
            assert a[name] == pytest.approx(b[name], rel=1e-3, abs=1e-4), (name, a["step"])
    from transformers import AutoModelForCausalLM

    w_fast = AutoModelForCausalLM.from_pretrained(fast_out).state_dict()
    w_plain = AutoModelForCausalLM.from_pretrained(plain_out).state_dict()
    assert all(torch.allclose(w_fast[k], w_plain[k], rtol=1e-3, atol=1e-5) for k in w_fast)


def _replaced_forwards(model: torch.nn.Module) -> int:
    return sum(isinstance(m.__dict__.get("forward"), types.MethodType) for m in model.modules())


def test_the_lean_mlp_is_applied_only_when_switched_on_and_never_under_zero_3(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    def load():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    model = load()
    apply_model_switches(model, SpeedSwitches.readable(), zero_stage=0)
    assert _replaced_forwards(model) == 0
    apply_model_switches(model, SpeedSwitches(), zero_stage=3)
    assert _replaced_forwards(model) == 0
    apply_model_switches(model, SpeedSwitches(), zero_stage=2)
    assert _replaced_forwards(model) == model.config.num_hidden_layers


def test_heap_trimming_only_when_switched_on_and_on_cpu():
    assert heap_trimmer(SpeedSwitches.readable(), on_cuda=False).__name__ == "_nothing"
    assert heap_trimmer(SpeedSwitches(), on_cuda=True).__name__ == "_nothing"


def test_the_environment_switch_is_read_by_the_command_not_the_library(monkeypatch, tmp_path):
    """A script's FitConfig keeps the defaults whatever the environment; `tso-train fit` passes the
    user's off switch."""
    monkeypatch.setenv(TRIM_HEAP_OFF_VARIABLE, "1")
    assert FitConfig(snapshot="s", model="m", out="o").speed == SpeedSwitches()
    seen = []

    def fake_fit(cfg, progress=None):
        seen.append(cfg)
        raise TSOTrainError("stopped by the test")

    import tso_train.loop
    from tso_train.cli import cli

    monkeypatch.setattr(tso_train.loop, "fit", fake_fit)
    result = CliRunner().invoke(cli, ["fit", "s.parquet", "--model", "m", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "stopped by the test" in result.output
    assert seen[0].speed == SpeedSwitches(trim_heap=False)
