"""`tso-train sft`: supervised fine-tuning on conversations with the engine of `fit`.

DATA is Parquet or JSONL with a ``messages`` column: list<struct<role, content>> (the
judge-SFT export of `tso-data export judge-sft`, or any TRL conversational SFT file). The loss
is the token-mean negative log-likelihood of the assistant tokens over the whole global batch
(every micro-batch and rank). Conversations longer than ``--max-length`` keep their start;
one left with no assistant token is dropped and counted.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tso_train import checkpoint as ckpt
from tso_train.data import EncodedSequence, batch_tokens, collate_sequences, encode_conversation, pad_id_of, split_global_batch
from tso_train.engine import (
    all_reduce_sum,
    build_ds_config,
    check_batch_sizes,
    check_model_reference,
    cosine_lr,
    engine_options,
    grad_norm_after_step,
    grad_norm_before_step,
    initialize,
    peak_memory_bytes,
    rank,
    release_freed_memory,
    set_lr,
    start_training_process,
    world_size,
)
from tso_train.errors import NonFiniteLossError, TSOTrainError
from tso_train.files import file_digest
from tso_train.logprobs import SequenceLogps
from tso_train.mlp import use_lean_mlp
from tso_train.packing import enable_packing, resolve_packing
from tso_train.progress import NullProgress
from tso_train.resume import ResumePoint, open_run, prepare_run, run_fingerprint
from tso_train.settings import check_engine_settings
from tso_train.snapshot import _check_roles_sft, Message


@dataclass
class SFTConfig:
    data: str
    model: str
    out: str
    epochs: int = 1
    global_batch: int = 32
    micro_batch: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.05
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    max_length: int | None = 1024
    zero: int = 0
    offload: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    seed: int = 43
    deepspeed_config: str | None = None
    resume: bool = False
    save_every: int = 50
    packing: bool | None = None  # padding-free micro-batches; None: on CPU only (resolve_packing)
    on_step: Callable[[dict], None] | None = field(default=None, repr=False)


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
        _check_roles_sft(where, messages)
        conversations.append(messages)
    if not conversations:
        raise TSOTrainError(f"{path}: no conversations")
    return conversations


def check_before_load(cfg: SFTConfig, out: Path) -> tuple[list[list[Message]], dict, ResumePoint | None]:
    """Every check that needs no model: flags, the data, batch sizes, the DeepSpeed config, the
    run directory and `--resume` (see tso_train.resume). Reads only."""
    check_engine_settings(cfg)
    check_model_reference(cfg.model)
    conversations = read_conversations(cfg.data)
    check_batch_sizes(cfg.global_batch, cfg.micro_batch, world_size())
    build_ds_config(engine_options(cfg, cfg.global_batch))  # reads and checks a --deepspeed-config
    fingerprint = run_fingerprint(cfg, {"data": file_digest(Path(cfg.data))},
                                  resolve_packing(cfg.packing, torch.cuda.is_available()), world_size())
    return conversations, fingerprint, prepare_run(out, fingerprint, cfg.resume)


def _encode(tokenizer, conversations: list[list[Message]], max_length: int | None) -> tuple[list[EncodedSequence], int]:
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


def sft(cfg: SFTConfig, progress=None) -> dict:
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    out = Path(cfg.out)
    conversations, fingerprint, resume_at = check_before_load(cfg, out)
    lm, tokenizer = start_training_process(cfg)
    seqs, dropped = _encode(tokenizer, conversations, cfg.max_length)
    progress.note(f"{len(seqs)} conversations ({dropped} dropped: no assistant token within --max-length {cfg.max_length})")
    if dropped and rank() == 0:
        warnings.warn(f"dropped {dropped} conversation(s) with no assistant token within --max-length", stacklevel=2)
    unit = cfg.micro_batch * world_size()
    gb = cfg.global_batch
    if gb > len(seqs):
        gb = (len(seqs) // unit) * unit
        if gb == 0:
            raise TSOTrainError(f"{len(seqs)} conversation(s) are fewer than --micro-batch × ranks = {unit}")
        if rank() == 0:
            warnings.warn(f"--global-batch {cfg.global_batch} exceeds the {len(seqs)} conversations; using {gb}", stacklevel=2)
    gas = gb // unit
    steps_per_epoch = len(seqs) // gb
    total = steps_per_epoch * cfg.epochs
    warmup = int(math.ceil(cfg.warmup_ratio * total))
    packed = resolve_packing(cfg.packing, torch.cuda.is_available()) and enable_packing(lm)
    engine = initialize(SequenceLogps(lm, packed=packed), engine_options(cfg, gb), weight_decay_module=lm)
    if engine.zero_optimization_stage() < 3:  # the stage a --deepspeed-config may have set
        use_lean_mlp(lm)
    device = next(engine.module.parameters()).device
    pad_id = pad_id_of(tokenizer)
    log, state = open_run(engine, out, fingerprint, resume_at, {
        **{k: v for k, v in asdict(cfg).items() if k not in ("on_step", "resume")},
        "n_conversations": len(seqs), "n_dropped": dropped, "global_batch_used": gb, "world_size": world_size()})
    start = {"epoch": 0, "step": 0, "global_step": 0}
    if state is not None:
        start = {k: state[k] for k in start}
    progress.start(total, done=start["global_step"])
    progress.phase("training")
    global_step = start["global_step"]
    last: dict = {}
    for epoch in range(start["epoch"], cfg.epochs):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(seqs))
        for step in range(start["step"] if epoch == start["epoch"] else 0, steps_per_epoch):
            lr = cosine_lr(epoch * steps_per_epoch + step, total, warmup, cfg.lr)
            set_lr(engine, lr)
            idx_all = order[step * gb : (step + 1) * gb].tolist()
            micro = split_global_batch(idx_all, cfg.micro_batch, world_size(), rank(), key=lambda i: len(seqs[i]),
                                       balance_tokens=packed)
            # token-mean over the global batch: every rank needs the global count first
            local_tokens = sum(int(seqs[i].label_mask[1:].sum()) for m in micro for i in m)
            global_tokens = float(all_reduce_sum(torch.tensor([float(local_tokens)], dtype=torch.float64))[0])
            scale = gas * world_size() / global_tokens  # undoes DeepSpeed's 1/gas and the ranks' mean
            nll_sum = torch.zeros(1, dtype=torch.float64)
            t0 = time.perf_counter()
            n_tokens = 0
            for m, idx in enumerate(micro):
                batch = {k: v.to(device) for k, v in collate_sequences([seqs[i] for i in idx], pad_id, packed).items()}
                sums, _ = engine(**batch)
                nll = -sums.sum()
                engine.backward(nll * scale)
                release_freed_memory()
                nll_sum += nll.detach().double().cpu()
                n_tokens += batch_tokens(batch)
                if m < gas - 1:
                    engine.step()
            totals = all_reduce_sum(torch.tensor([float(nll_sum), float(n_tokens)], dtype=torch.float64))
            loss = float(totals[0]) / global_tokens
            if not math.isfinite(loss):
                raise NonFiniteLossError(f"non-finite loss ({loss}) at step {global_step + 1}; stopped before the update; "
                                         f"{ckpt.describe_saved_state(out)}")
            norm_before = grad_norm_before_step(engine)
            engine.step()
            global_step += 1
            elapsed = time.perf_counter() - t0
            grad_norm = grad_norm_after_step(engine, norm_before)
            row = {"loss": loss, "lr": lr, "grad_norm": float(grad_norm) if grad_norm is not None else None,
                   "tokens_per_s": float(totals[1]) / elapsed, "peak_mem": peak_memory_bytes(),
                   "epoch": epoch + 1, "step": global_step}
            log.write(row)
            last = row
            if cfg.on_step is not None:
                cfg.on_step(row)
            progress.update(row)
            if cfg.save_every and global_step % cfg.save_every == 0 and global_step < total:
                nxt = (epoch, step + 1) if step + 1 < steps_per_epoch else (epoch + 1, 0)
                ckpt.save_engine_state(engine, out, f"step-{global_step}", {
                    "fingerprint": fingerprint, "part": 0, "epoch": nxt[0], "step": nxt[1], "global_step": global_step})
    ckpt.save_hf_policy(engine, lm, tokenizer, out, "final", cfg.zero)
    progress.stop()
    return {"out": str(out), "steps": global_step, "last": last, "n": len(seqs), "n_dropped": dropped,
            "seconds": time.perf_counter() - t_start}
