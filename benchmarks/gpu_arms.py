"""The arms of the GPU training benchmark (benchmarks/bench_train_gpu.py): what each one runs,
the model and pairs they share, and the tso-train runner.

An arm's name says what it runs, dash-separated: the engine (``z2``, ``z3``: `tso-train fit` at
ZeRO-2/3; ``trl``: TRL's DPOTrainer), for tso-train ``packed`` or ``padded`` micro-batches, the
model size (``0.5b``, ``1.5b``), then options:

* ``mbN``: N pairs per micro-batch (default 8; the global batch stays 64);
* ``gc``: activation checkpointing;
* ``fused``: the chunked LM head that recomputes its logits in backward (tso-train only);
* ``compile``: each decoder layer through torch.compile (tso-train only);
* ``flex``, ``segments``: packed rows attend with compiled flex attention or one SDPA call per
  sequence instead of varlen flash attention (tso-train, packed only);
* ``bf16w``: TRL with its weights in bf16 (default: TRL's own fp32 weights under bf16 autocast).

    >>> parse_arm("z2-packed-0.5b-mb16-gc")  # doctest: +NORMALIZE_WHITESPACE
    Arm(name='z2-packed-0.5b-mb16-gc', engine='z2', size='0.5b', packed=True, kernel='varlen', micro_batch=16,
        checkpointing=True, fused_head=False, compile=False, bf16_weights=False)
"""

from __future__ import annotations

import gc
import math
import random
import re
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ENGINES = ("z2", "z3", "trl")
SIZES = {  # name -> (hidden, layers); heads of 128 dims, a key/value head per 4 query heads
    "0.5b": (1536, 20), "1.5b": (2048, 32), "tiny": (256, 2),
}
VOCAB = {"0.5b": 32000, "1.5b": 32000, "tiny": 2048}
DEFAULT_MICRO_BATCH = 8
WORDS = (
    "the model answers a question about data training reward policy human judge score pair "
    "prompt version size matrix round reference gradient loss token batch clip margin sample "
    "correct wrong because therefore however first second finally result value number"
).split()


@dataclass(frozen=True)
class Arm:
    name: str
    engine: str
    size: str
    packed: bool = False
    kernel: str = "varlen"
    micro_batch: int = DEFAULT_MICRO_BATCH
    checkpointing: bool = False
    fused_head: bool = False
    compile: bool = False
    bf16_weights: bool = False

    @property
    def is_trl(self) -> bool:
        return self.engine == "trl"


class ArmError(ValueError):
    pass


def parse_arm(name: str) -> Arm:
    """An Arm from its name (see the module docstring); ArmError says what is wrong."""
    parts = name.strip().split("-")
    if len(parts) < 2 or parts[0] not in ENGINES:
        raise ArmError(f"arm {name!r}: must start with one of {', '.join(ENGINES)}")
    engine, rest = parts[0], parts[1:]
    packed = False
    if engine != "trl":
        if not rest or rest[0] not in ("packed", "padded"):
            raise ArmError(f"arm {name!r}: say 'packed' or 'padded' after {engine}")
        packed, rest = rest[0] == "packed", rest[1:]
    if not rest or rest[0] not in SIZES or rest[0] == "tiny":
        raise ArmError(f"arm {name!r}: the model size must follow ({', '.join(s for s in SIZES if s != 'tiny')})")
    fields: dict = {"name": name, "engine": engine, "size": rest[0], "packed": packed}
    for option in rest[1:]:
        fields.update(_option(name, engine, packed, option))
    return Arm(**fields)


def _option(name: str, engine: str, packed: bool, option: str) -> dict:
    if m := re.fullmatch(r"mb(\d+)", option):
        return {"micro_batch": int(m.group(1))}
    tso_only = {"fused": {"fused_head": True}, "compile": {"compile": True}}
    packed_only = {"flex": {"kernel": "flex"}, "segments": {"kernel": "segments"}}
    if option == "gc":
        return {"checkpointing": True}
    if option == "bf16w" and engine == "trl":
        return {"bf16_weights": True}
    if option in tso_only and engine != "trl":
        return tso_only[option]
    if option in packed_only and packed:
        return packed_only[option]
    raise ArmError(f"arm {name!r}: option {option!r} does not apply (mbN, gc; tso-train: fused, compile; "
                   "packed: flex, segments; trl: bf16w)")


def model_config(size: str, tokenizer):
    from transformers import LlamaConfig

    hidden, layers = SIZES[size]
    heads = max(2, hidden // 128)
    return LlamaConfig(
        vocab_size=VOCAB[size], hidden_size=hidden, intermediate_size=int(hidden * 8 / 3) // 128 * 128,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 4),
        max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )


def build_model(model_dir: Path, size: str, tokenizer_dir: Path) -> int:
    """A randomly initialised Llama of ``size`` saved in bf16 at ``model_dir`` (built on the GPU
    where there is one); returns its parameter count. Reuses a finished earlier build."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    stamp = model_dir / "n_params.txt"
    if stamp.exists():
        return int(stamp.read_text())
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(model_config(size, tokenizer)).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    stamp.write_text(str(n_params))
    return n_params


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def build_data(work: Path, n_pairs: int, tiny: bool) -> tuple[Path, list[dict]]:
    """The tokenizer (``work/tokenizer``) and the synthetic pairs, as a snapshot Parquet file for
    tso-train and as dicts for TRL. Prompts of 60 words, answers of 150-300 (tiny: 8; 10-30)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tso_train.tiny import train_tokenizer

    rng = random.Random(0)
    train_tokenizer([_text(rng, 50) for _ in range(2000)], vocab_size=1000).save_pretrained(work / "tokenizer")
    prompt_words, answer_words = ((8, (10, 30)) if tiny else (60, (150, 300)))
    pairs = [{
        "prompt": [{"role": "user", "content": _text(rng, prompt_words)}],
        "chosen": [{"role": "assistant", "content": _text(rng, rng.randint(*answer_words))}],
        "rejected": [{"role": "assistant", "content": _text(rng, rng.randint(*answer_words))}],
    } for _ in range(n_pairs)]
    rows = [{**p, "pair_id": f"p{i}", "prompt_id": f"q{i}", "kind": "matrix", "chosen_source": "a",
             "rejected_source": "b", "chosen_score": None, "rejected_score": None, "round": 1}
            for i, p in enumerate(pairs)]
    table = pa.Table.from_pylist(rows).replace_schema_metadata({
        "tso.schema_version": "1", "tso.snapshot_id": "gpu-bench", "tso.round": "1", "tso.config": "{}"})
    snapshot = work / "pairs.parquet"
    pq.write_table(table, snapshot)
    return snapshot, pairs


def tokens_per_pair(tokenizer_dir: Path, snapshot: Path, max_length: int) -> float:
    """Mean real tokens of a pair (chosen + rejected sequences) as tso-train encodes them."""
    from transformers import AutoTokenizer

    from tso_train.data import encode_pairs
    from tso_train.snapshot import read_snapshot

    encoded = encode_pairs(AutoTokenizer.from_pretrained(tokenizer_dir), read_snapshot(snapshot).pairs, max_length)
    return sum(len(p.chosen) + len(p.rejected) for p in encoded.pairs) / len(encoded.pairs)


class ArmDone(Exception):
    """Raised from the step callback when an arm has run its steps (or its time): fit stops there."""


class PhaseClock:
    """A progress sink (tso_train.progress) that notes when each phase of `fit` begins."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, float]] = []

    def start(self, total: int, done: int = 0) -> None: ...
    def note(self, text: str) -> None: ...
    def update(self, row: dict) -> None: ...
    def stop(self) -> None: ...

    def phase(self, text: str) -> None:
        self.phases.append((text, time.perf_counter()))

    def reference_seconds(self) -> float | None:
        starts = [t for text, t in self.phases if "reference" in text]
        ends = [t for text, t in self.phases if text.endswith("training")]
        return ends[0] - starts[0] if starts and ends else None


def run_tso_arm(arm: Arm, model_dir: Path, snapshot: Path, out: Path, settings: dict) -> dict:
    """One tso-train arm in this process: `fit` (DPO, one part, one epoch) stopped after
    ``settings['steps']`` optimiser steps or ``settings['arm_timeout']`` seconds, whichever comes
    first, so nothing is saved. Returns the steps' metrics and times."""
    import torch

    from tso_train.loop import FitConfig, fit
    from tso_train.speed import SpeedSwitches

    rows: list[dict] = []
    stamps: list[float] = []
    shutil.rmtree(out / arm.name, ignore_errors=True)  # a rerun of the arm starts a fresh run
    started = time.perf_counter()

    def on_step(row: dict) -> None:
        rows.append(row)
        stamps.append(time.perf_counter())
        if len(rows) >= settings["steps"] or stamps[-1] - started > settings["arm_timeout"]:
            raise ArmDone

    speed = SpeedSwitches(varlen_attention=arm.kernel == "varlen", flex_attention=arm.kernel == "flex",
                          fused_lm_head=arm.fused_head, compile_layers=arm.compile)
    cfg = FitConfig(snapshot=str(snapshot), model=str(model_dir), out=str(out / arm.name), loss="dpo", parts=1,
                    epochs=1, global_batch=settings["global_batch"], micro_batch=arm.micro_batch,
                    max_length=settings["max_length"], zero=2 if arm.engine == "z2" else 3, bf16=settings["bf16"],
                    gradient_checkpointing=arm.checkpointing, packing=arm.packed, save_every=0, speed=speed,
                    on_step=on_step)
    clock = PhaseClock()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result: dict = {}
    try:
        fit(cfg, clock)
    except ArmDone:
        pass
    except Exception as exc:  # noqa: BLE001 - one arm's failure is recorded, the next arm runs
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                  "traceback_tail": traceback.format_exc()[-3000:]}
    result.update(steps_summary(rows, stamps, clock.reference_seconds(), settings["global_batch"]))
    release_memory(result)
    return result


def steps_summary(rows: list[dict], stamps: list[float], reference_s: float | None, global_batch: int) -> dict:
    """Throughput over steps 2..n (step 1 pays for warm-up), the first step's loss, peak memory."""
    if not rows:
        return {"ok": False, "steps": 0}
    out = {
        "ok": True, "steps": len(rows), "first_step_loss": rows[0]["loss"],
        "first_step_loss_minus_ln2": rows[0]["loss"] - math.log(2),
        "losses": [r["loss"] for r in rows], "peak_mem_gib": max(r["peak_mem"] for r in rows) / 2**30,
        "reference_s": reference_s,
    }
    if len(rows) >= 2:
        out["pairs_per_s"] = global_batch * (len(rows) - 1) / (stamps[-1] - stamps[0])
        if all("tokens_per_s" in r for r in rows):  # tso-train's own count, over its optimiser steps
            out["trainer_tokens_per_s"] = sum(r["tokens_per_s"] for r in rows[1:]) / (len(rows) - 1)
    return out


def release_memory(result: dict) -> None:
    """Free what an arm left (its engine dies with the frames of the stopped run) and note what
    stays allocated, so a leak shows in the next arm's numbers."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        result["allocated_after_gib"] = torch.cuda.memory_allocated() / 2**30
    try:
        import torch._dynamo

        torch._dynamo.reset()
    except Exception:  # noqa: BLE001 - only matters after a compile arm
        pass
