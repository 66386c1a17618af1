"""`tso-train fit` end to end on CPU through DeepSpeed (in-process, one rank)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tso_train.errors import NonFiniteLossError, TSOTrainError
from tso_train.loop import FitConfig, fit


def run_fit(tmp_path: Path, snapshot: Path, model: Path, name: str, **kw) -> tuple[list[dict], dict]:
    rows: list[dict] = []
    settings = dict(parts=3, epochs=1, global_batch=8, micro_batch=4, lr=1e-3, save_every=0)
    settings.update(kw)
    cfg = FitConfig(snapshot=str(snapshot), model=str(model), out=str(tmp_path / name), on_step=rows.append, **settings)
    return rows, fit(cfg)


def first_rows_of_parts(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        if r["part"] not in seen:
            seen.add(r["part"])
            out.append(r)
    return out


@pytest.mark.slow
def test_every_part_starts_at_a_reference_reset(tmp_path, hh_snapshot, hh_model_dir):
    """First step of every part: DPO loss = ln 2, σ(−h) = 0.5; dual-clip loss = γ_w + γ_l."""
    rows, _ = run_fit(tmp_path, hh_snapshot, hh_model_dir, "dpo", loss="dpo")
    firsts = first_rows_of_parts(rows)
    assert [r["part"] for r in firsts] == [1, 2, 3]
    for r in firsts:
        assert r["loss"] == pytest.approx(math.log(2), abs=1e-5)
        assert r["grad_weight"] == pytest.approx(0.5, abs=1e-6)
        assert r["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert any(abs(r["rewards/margins"]) > 1e-3 for r in rows if r not in firsts)  # it did train

    rows, _ = run_fit(tmp_path, hh_snapshot, hh_model_dir, "clip", loss="dual-clip", gamma_w=20, gamma_l=10)
    for r in first_rows_of_parts(rows):
        assert r["loss"] == pytest.approx(30.0, abs=1e-4)
        assert r["clip/chosen_active"] == 1.0 and r["clip/rejected_active"] == 1.0
    # metric rows: one per optimiser step, the full list of names
    names = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
             "logps/rejected", "grad_weight", "clip/chosen_active", "clip/rejected_active", "lr", "grad_norm",
             "tokens_per_s", "peak_mem", "part", "step"}
    assert names <= set(rows[0]) and [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["grad_norm"] is not None and r["grad_norm"] > 0 for r in rows)


def pair_accuracy(model_dir: Path, ref_dir: Path, snapshot: Path) -> float:
    """Share of pairs whose implicit reward prefers the chosen answer (policy vs initial model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tso_train.data import collate_pairs, encode_pairs, pad_id_of
    from tso_train.logprobs import sequence_logps
    from tso_train.snapshot import read_snapshot

    tok = AutoTokenizer.from_pretrained(ref_dir)
    pairs = encode_pairs(tok, read_snapshot(snapshot).pairs, 1024).pairs
    batch = collate_pairs(pairs, pad_id_of(tok))
    out = []
    for d in (model_dir, ref_dir):
        m = AutoModelForCausalLM.from_pretrained(d).eval()
        with torch.no_grad():
            out.append(sequence_logps(m, batch["input_ids"], batch["attention_mask"], batch["label_mask"])[0])
    n = len(pairs)
    margin = (out[0][:n] - out[1][:n]) - (out[0][n:] - out[1][n:])
    return float((margin > 0).float().mean())


@pytest.mark.slow
def test_short_fit_on_hh_rlhf_learns_the_preferences(tmp_path, hh_snapshot, hh_model_dir):
    from transformers import AutoModelForCausalLM

    rows, summary = run_fit(tmp_path, hh_snapshot, hh_model_dir, "hh", loss="dpo", parts=2, epochs=6,
                            global_batch=8, micro_batch=8, lr=2e-3, warmup_ratio=0.0)
    final = Path(summary["out"]) / "final"
    assert pair_accuracy(final, hh_model_dir, hh_snapshot) > 0.75
    assert rows[-1]["rewards/accuracies"] > 0.5
    # the saved policy loads with transformers; each part was saved
    assert isinstance(AutoModelForCausalLM.from_pretrained(final), torch.nn.Module)
    assert (Path(summary["out"]) / "part-1" / "config.json").is_file()


@pytest.mark.slow
def test_zero_0_and_zero_3_give_the_same_losses(tmp_path, hh_snapshot, hh_model_dir):
    r0, s0 = run_fit(tmp_path, hh_snapshot, hh_model_dir, "z0", loss="dpo", parts=1, epochs=1, zero=0)
    r3, s3 = run_fit(tmp_path, hh_snapshot, hh_model_dir, "z3", loss="dpo", parts=1, epochs=1, zero=3)
    assert len(r0) == len(r3) > 2
    for a, b in zip(r0, r3):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
        assert a["rewards/margins"] == pytest.approx(b["rewards/margins"], rel=1e-3, abs=1e-5)
    from transformers import AutoModelForCausalLM

    w0 = AutoModelForCausalLM.from_pretrained(Path(s0["out"]) / "final").state_dict()
    w3 = AutoModelForCausalLM.from_pretrained(Path(s3["out"]) / "final").state_dict()
    assert all(torch.allclose(w0[k], w3[k], atol=1e-5) for k in w0)


@pytest.mark.parametrize("loss", ["ipo", "cdpo"])
def test_other_losses_run(tmp_path, hh_snapshot, hh_model_dir, loss):
    rows, _ = run_fit(tmp_path, hh_snapshot, hh_model_dir, loss, loss=loss, parts=1, epochs=1, global_batch=16,
                      micro_batch=8)
    expected = 6.25 if loss == "ipo" else math.log(2)
    assert rows[0]["loss"] == pytest.approx(expected, abs=1e-4)


def test_global_batch_larger_than_a_part_is_clamped(tmp_path, hh_snapshot, hh_model_dir):
    with pytest.warns(UserWarning, match="exceeds part"):
        rows, _ = run_fit(tmp_path, hh_snapshot, hh_model_dir, "clamp", loss="dpo", parts=3, epochs=1, global_batch=256)
    assert len(rows) == 3  # 48 pairs → parts of 16 → clamped to 16: one step per part


def test_bad_inputs(tmp_path, hh_snapshot, hh_model_dir, th):
    with pytest.raises(TSOTrainError, match="not divisible by --micro-batch 3"):
        run_fit(tmp_path, hh_snapshot, hh_model_dir, "a", global_batch=8, micro_batch=3)
    with pytest.raises(TSOTrainError, match="--parts 49 is more than the snapshot's 48"):
        run_fit(tmp_path, hh_snapshot, hh_model_dir, "b", parts=49)
    not_lm = tmp_path / "not-a-model"
    not_lm.mkdir()
    (not_lm / "config.json").write_text('{"model_type": "bert", "architectures": ["BertForSequenceClassification"]}')
    with pytest.raises(TSOTrainError, match="not a causal language model .*BertForSequenceClassification"):
        run_fit(tmp_path, hh_snapshot, not_lm, "c")
    (not_lm / "config.json").write_text('{"model_type": "llama"}')  # no weights at all
    with pytest.raises(TSOTrainError, match="--model .*not a causal language model"):
        run_fit(tmp_path, hh_snapshot, not_lm, "c2")
    with pytest.raises(TSOTrainError, match="not a transformers model"):
        run_fit(tmp_path, hh_snapshot, tmp_path / "missing", "c3")
    with pytest.raises(TSOTrainError, match="no checkpoint"):
        run_fit(tmp_path, hh_snapshot, hh_model_dir, "d", resume=True)


def test_nan_loss_stops_and_says_what_a_resume_would_find(tmp_path, hh_snapshot, hh_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = tmp_path / "broken"
    model = AutoModelForCausalLM.from_pretrained(hh_model_dir)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(hh_model_dir).save_pretrained(broken)
    with pytest.raises(NonFiniteLossError, match="non-finite loss .* step 1; stopped before the update") as err:
        run_fit(tmp_path, hh_snapshot, broken, "nan", loss="dpo", parts=1, epochs=1, global_batch=16, micro_batch=8)
    assert "no checkpoint was written yet" in str(err.value) and "intact" not in str(err.value)
    assert not (tmp_path / "nan" / "checkpoints").exists()

    # an update so large that step 2 is NaN: step 1's checkpoint is named, and it is whole
    with pytest.raises(NonFiniteLossError, match="step 2; stopped before the update") as err:
        run_fit(tmp_path, hh_snapshot, hh_model_dir, "explodes", loss="dpo", parts=1, epochs=1, global_batch=16,
                micro_batch=8, lr=1e12, grad_clip=0.0, warmup_ratio=0.0, save_every=1)
    checkpoint = tmp_path / "explodes" / "checkpoints" / "step-1"
    assert f"the last checkpoint ({checkpoint}) is intact" in str(err.value)
    from tso_train.checkpoint import verify_engine_state

    assert verify_engine_state(tmp_path / "explodes").position["global_step"] == 1


@pytest.mark.slow
def test_bf16_zero2_offload_and_gradient_checkpointing_run_on_cpu(tmp_path, hh_snapshot, hh_model_dir):
    """bf16 kernels and offload are GPU features; on CPU we check they run and start at a reset."""
    rows, summary = run_fit(tmp_path, hh_snapshot, hh_model_dir, "bf16", loss="dpo", parts=1, epochs=1, global_batch=16,
                            micro_batch=8, bf16=True, zero=2, offload=True, gradient_checkpointing=True)
    assert len(rows) == 3
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=2e-3)  # bf16 rounding
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(Path(summary["out"]) / "final").dtype == torch.bfloat16


@pytest.mark.slow
def test_packed_and_padded_micro_batches_train_the_same(tmp_path, hh_snapshot, hh_model_dir):
    """--no-packing (right-padded micro-batches) and the default packed ones: same losses, same
    rewards, step for step (only the summation order differs)."""
    settings = dict(loss="dpo", parts=1, global_batch=8, micro_batch=4)
    packed, _ = run_fit(tmp_path, hh_snapshot, hh_model_dir, "packed", **settings)
    padded, _ = run_fit(tmp_path, hh_snapshot, hh_model_dir, "padded", packing=False, **settings)
    assert len(packed) == len(padded) >= 3
    for a, b in zip(packed, padded):
        for name in ("loss", "rewards/chosen", "rewards/rejected", "logps/chosen"):
            assert a[name] == pytest.approx(b[name], rel=1e-3, abs=1e-4), name
