"""`tso-train sft`: supervised fine-tuning on conversations, with the engine, optimiser step and
loop of `fit` (tso_train.trainer) run as a single part with no reference.

DATA is Parquet or JSONL with a ``messages`` column: list<struct<role, content>> (the
judge-SFT export of `tso-data export judge-sft`, or any TRL conversational SFT file). The loss
is the token-mean negative log-likelihood of the assistant tokens over the whole global batch
(every micro-batch and rank). Conversations longer than ``--max-length`` keep their start;
one left with no assistant token is dropped and counted.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tso_train import checkpoint as ckpt
from tso_train.data import EncodedSequence, encode_conversation, pad_id_of
from tso_train.engine import (
    check_model_reference,
    rank,
    start_training_process,
    world_size,
)
from tso_train.errors import TSOTrainError
from tso_train.files import file_digest
from tso_train.objectives import NLLObjective
from tso_train.progress import NullProgress
from tso_train.resume import ResumePoint, check_run
from tso_train.schedule import plan_part
from tso_train.settings import SFTConfig, check_engine_settings, run_details
from tso_train.snapshot import Message, check_sft_messages
from tso_train.trainer import Trainer

__all__ = ["SFTConfig", "check_before_load", "read_conversations", "sft"]


def sft(cfg: SFTConfig, progress=None) -> dict:
    """Run `tso-train sft`; returns a summary. ``progress``: an optional sink (tso_train.progress)."""
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    conversations, fingerprint, resume_at = check_before_load(cfg, Path(cfg.out))
    lm, tokenizer = start_training_process(cfg)
    sequences, dropped = encode_conversations(tokenizer, conversations, cfg.max_length)
    progress.note(f"{len(sequences)} conversations ({dropped} dropped: no assistant token within --max-length "
                  f"{cfg.max_length})")
    if dropped and rank() == 0:
        warnings.warn(f"dropped {dropped} conversation(s) with no assistant token within --max-length", stacklevel=2)

    plan = plan_part(len(sequences), cfg.global_batch, cfg.micro_batch, world_size(), cfg.epochs, cfg.warmup_ratio,
                     f"the {len(sequences)} conversations", warn=rank() == 0)
    details = {**run_details(cfg), "n_conversations": len(sequences), "n_dropped": dropped,
               "global_batch_used": plan.global_batch, "world_size": world_size()}
    trainer = Trainer.start(cfg, lm, fingerprint, resume_at, plan.global_batch, details, progress)
    progress.start(plan.total_steps, done=trainer.position.global_step)
    progress.phase("training")
    objective = NLLObjective(sequences, pad_id_of(tokenizer), trainer.packed)
    trainer.run_part(plan, np.arange(len(sequences)), objective, part=None)
    ckpt.save_hf_policy(trainer.engine, lm, tokenizer, trainer.out, "final", cfg.zero)
    progress.stop()
    return {"out": str(trainer.out), "steps": trainer.position.global_step, "last": trainer.last_row,
            "n": len(sequences), "n_dropped": dropped, "seconds": time.perf_counter() - t_start}


def read_conversations(path: str | Path) -> list[list[Message]]:
    """Conversations from Parquet or JSONL with a `messages` column; one-line errors naming the
    row (Parquet, from 1) or line (JSONL, from 1)."""
    path = Path(path)
    if not path.is_file():
        raise TSOTrainError(f"{path}: no such file")
    rows: list[tuple[str, object]] = []  # (where, messages)
    if path.suffix in (".jsonl", ".json"):
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise TSOTrainError(f"{path}: cannot read ({exc})") from None
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise TSOTrainError(f"{path}:{n}: not JSON ({getattr(exc, 'msg', 'nested too deeply')})") from None
            if not isinstance(obj, dict) or "messages" not in obj:
                raise TSOTrainError(f"{path}:{n}: field 'messages': missing")
            rows.append((f"{path}:{n}", obj["messages"]))
    else:
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TSOTrainError(f"{path}: not a Parquet file ({exc})") from None
        if "messages" not in table.column_names:
            raise TSOTrainError(f"{path}: missing column 'messages' (list<struct<role, content>>)")
        rows = [(f"{path}: row {i}", m) for i, m in enumerate(table.column("messages").to_pylist(), start=1)]
    conversations = []
    for where, messages in rows:
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise TSOTrainError(f"{where}: field 'messages': not a list of {{role, content}} messages")
        messages = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
        check_sft_messages(where, messages)
        conversations.append(messages)
    if not conversations:
        raise TSOTrainError(f"{path}: no conversations")
    return conversations


def check_before_load(cfg: SFTConfig, out: Path) -> tuple[list[list[Message]], dict, ResumePoint | None]:
    """Every check that needs no model: flags, the data, then what `fit` checks too (batch sizes,
    the DeepSpeed config, the run directory and `--resume`: tso_train.resume.check_run)."""
    check_engine_settings(cfg)
    check_model_reference(cfg.model)
    conversations = read_conversations(cfg.data)
    fingerprint, resume_at = check_run(cfg, out, {"data": file_digest(Path(cfg.data))})
    return conversations, fingerprint, resume_at


def encode_conversations(tokenizer, conversations: list[list[Message]],
                         max_length: int | None) -> tuple[list[EncodedSequence], int]:
    """Encoded conversations cut to ``max_length`` (keeping their start); those left with no
    assistant token are dropped and counted."""
    seqs: list[EncodedSequence] = []
    dropped = 0
    for messages in conversations:
        s = encode_conversation(tokenizer, messages)
        if max_length is not None and len(s) > max_length:
            s = EncodedSequence(s.input_ids[:max_length], s.label_mask[:max_length])
        if not s.label_mask[1:].any():
            dropped += 1
            continue
        seqs.append(s)
    return seqs, dropped
