"""Agreement with TRL's DPOTrainer on the same tiny model and conversational pairs: per-pair
chosen/rejected log-probs and the first step's loss, mean log-probs and gradient norm.

For multi-turn pairs TRL scores every token after the prompt, the user turns inside chosen and
rejected included; tso-train scores assistant turns only, unless `--score-user-turns`.
"""

from __future__ import annotations

import math

import pytest
import torch

from tso_train.data import collate_pairs, encode_pairs, pad_id_of
from tso_train.logprobs import sequence_logps
from tso_train.loop import FitConfig, fit
from tso_train.packing import enable_packing
from tso_train.snapshot import PreferencePair

REL = 1e-5


def trl_first_step(model_dir, pairs: list[dict], out_dir) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """TRL's per-pair (chosen, rejected) log-probs under the initial model, and its first logged
    step with the whole set as one batch (configured for CPU as FACTS.md says)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = DPOConfig(output_dir=str(out_dir), bf16=False, use_cpu=True, report_to="none", save_strategy="no",
                     per_device_train_batch_size=len(pairs), max_length=None, max_steps=1, logging_steps=1,
                     learning_rate=1e-6, beta=0.1, disable_tqdm=True)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                         train_dataset=datasets.Dataset.from_list(pairs), processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    with torch.no_grad():
        chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    trainer.train()
    return chosen.double(), rejected.double(), trainer.state.log_history[0]


def tso_logps(model_dir, pairs: list[dict], score_user_turns: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """tso-train's per-pair summed log-probs, through the encoding and packed forward `fit` uses."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert enable_packing(model)
    snapshot_pairs = [PreferencePair(str(i), p["prompt"], p["chosen"], p["rejected"]) for i, p in enumerate(pairs)]
    encoded = encode_pairs(tokenizer, snapshot_pairs, None, score_user_turns)
    assert len(encoded.pairs) == len(pairs)
    batch = collate_pairs(encoded.pairs, pad_id_of(tokenizer), packed=True)
    with torch.no_grad():
        sums, _ = sequence_logps(model, batch["input_ids"], None, batch["label_mask"],
                                 position_ids=batch["position_ids"],
                                 cu_seqlens=batch["cu_seqlens"])
    n = len(pairs)
    return sums[:n].double(), sums[n:].double()


def tso_first_step(tmp_path, th, model_dir, pairs: list[dict], score_user_turns: bool) -> dict:
    rows: list[dict] = []
    snapshot = th.write_snapshot(tmp_path / "pairs.parquet", pairs)
    fit(FitConfig(snapshot=str(snapshot), model=str(model_dir), out=str(tmp_path / "tso"), loss="dpo", parts=1,
                  epochs=1,
                  global_batch=len(pairs), micro_batch=4, max_length=None, lr=1e-6, save_every=0,
                  score_user_turns=score_user_turns, on_step=rows.append))
    return rows[0]


def assert_close(a, b, rel: float = REL) -> None:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    worst = float(((a - b).abs() / b.abs()).max())
    assert worst < rel, f"relative difference {worst:.2e} (tolerance {rel:.0e})"


@pytest.mark.slow
def test_single_turn_log_probs_and_first_step_equal_trl(tmp_path, th, shared_data, hh_model_dir):
    pairs = th.hh_pairs(shared_data, 12)
    trl_chosen, trl_rejected, trl_step = trl_first_step(hh_model_dir, pairs, tmp_path / "trl")
    chosen, rejected = tso_logps(hh_model_dir, pairs, score_user_turns=False)
    assert_close(chosen, trl_chosen)
    assert_close(rejected, trl_rejected)
    step = tso_first_step(tmp_path, th, hh_model_dir, pairs, score_user_turns=False)
    assert step["loss"] == pytest.approx(trl_step["loss"], rel=REL)
    assert step["loss"] == pytest.approx(math.log(2), rel=REL)
    assert_close(step["logps/chosen"], trl_step["logps/chosen"])
    assert_close(step["logps/rejected"], trl_step["logps/rejected"])
    assert_close(step["grad_norm"], trl_step["grad_norm"], rel=1e-4)  # the same first update


@pytest.mark.slow
def test_multi_turn_pairs_match_trl_with_score_user_turns_and_differ_without(tmp_path, th, shared_data, hh_model_dir):
    pairs = th.hh_pairs(shared_data, 12, multi_turn=True)
    multi = [i for i, p in enumerate(pairs) if len(p["chosen"]) > 1]
    assert len(multi) >= 3  # the convention matters only for these
    trl_chosen, trl_rejected, trl_step = trl_first_step(hh_model_dir, pairs, tmp_path / "trl")

    chosen, rejected = tso_logps(hh_model_dir, pairs, score_user_turns=True)
    assert_close(chosen, trl_chosen)
    assert_close(rejected, trl_rejected)
    step = tso_first_step(tmp_path, th, hh_model_dir, pairs, score_user_turns=True)
    assert_close(step["logps/chosen"], trl_step["logps/chosen"])
    assert_close(step["logps/rejected"], trl_step["logps/rejected"])

    masked, _ = tso_logps(hh_model_dir, pairs, score_user_turns=False)  # the default masks user turns
    single = [i for i in range(len(pairs)) if i not in multi]
    assert_close(masked[single], trl_chosen[single])
    assert all(masked[i] > trl_chosen[i] for i in multi)  # fewer tokens scored: a larger (less negative) sum
