"""One TRL DPOTrainer arm of the GPU training benchmark, in its own process (TRL, accelerate and
the Trainer keep process-wide state): the same model, pairs, global batch and maximum length as
the tso-train arms, bf16, TRL's fastest documented settings for one GPU — reference log-probs
precomputed before training (no second model in memory), activation checkpointing off unless
the arm says ``gc`` (TRL's default is on), its default fused AdamW. (``padding_free`` is
unavailable in TRL 1.16: it warns and pads.)

    python -m benchmarks.trl_dpo_arm ARGS.json RESULT.json

ARGS.json: {"arm": name, "model": dir, "pairs": jsonl, "out": dir, "global_batch", "max_length",
"steps", "bf16", "arm_timeout"}. RESULT.json gets the same fields as a tso-train arm's.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks.gpu_arms import parse_arm, steps_summary


def run(spec: dict) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    arm = parse_arm(spec["arm"])
    on_gpu = torch.cuda.is_available()
    pairs = [json.loads(line) for line in Path(spec["pairs"]).read_text().splitlines() if line.strip()]
    rows: list[dict] = []
    stamps: list[float] = []
    started = time.perf_counter()

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())
            if stamps[-1] - started > spec["arm_timeout"]:
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                peak = torch.cuda.max_memory_allocated() if on_gpu else 0
                rows.append({"loss": logs["loss"], "peak_mem": peak})

    reference = {}
    original = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *args, **kwargs):
        t = time.perf_counter()
        out = original(self, *args, **kwargs)
        reference["seconds"] = time.perf_counter() - t
        return out

    DPOTrainer._precompute_ref_logps = timed_precompute
    micro = arm.micro_batch
    config = DPOConfig(
        output_dir=spec["out"], bf16=spec["bf16"], use_cpu=not on_gpu, report_to="none", save_strategy="no",
        per_device_train_batch_size=micro, gradient_accumulation_steps=spec["global_batch"] // micro,
        max_length=spec["max_length"], max_steps=spec["steps"], logging_steps=1, learning_rate=1e-6, beta=0.1,
        gradient_checkpointing=arm.checkpointing, precompute_ref_log_probs=True, precompute_ref_batch_size=2 * micro,
        disable_tqdm=True, seed=43, dataloader_num_workers=0,
    )
    dtype = torch.bfloat16 if arm.bf16_weights else torch.float32
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=dtype, attn_implementation="sdpa")
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()  # the peak counts the reference pass, as a tso-train arm's does
    trainer = DPOTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(pairs),
                         processing_class=AutoTokenizer.from_pretrained(spec["model"]), callbacks=[Clock()])
    trainer.train()
    result = steps_summary(rows, stamps, reference.get("seconds"), spec["global_batch"])
    result["tokens_per_pair_trl"] = _tokens_per_pair(trainer.train_dataset)
    result["settings"] = {"precompute_ref_log_probs": True, "gradient_checkpointing": arm.checkpointing,
                          "weights": str(dtype).removeprefix("torch."), "optim": str(config.optim),
                          "trl": __import__("trl").__version__}
    return result


def _tokens_per_pair(dataset) -> float:
    """Mean real tokens of a pair as TRL feeds them: prompt + chosen, prompt + rejected."""
    columns = set(dataset.column_names)
    names = ("prompt_ids", "chosen_ids", "rejected_ids") if "prompt_ids" in columns else (
        "prompt_input_ids", "chosen_input_ids", "rejected_input_ids")
    prompt, chosen, rejected = (dataset[n] for n in names)
    total = sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(prompt, chosen, rejected))
    return total / max(1, len(prompt))


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        result = run(spec)
    except Exception as exc:  # noqa: BLE001 - the orchestrator records why the arm failed
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                  "traceback_tail": traceback.format_exc()[-3000:]}
    Path(sys.argv[2]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
