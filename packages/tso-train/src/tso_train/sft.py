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
    all_reduce_sum, check_batch_sizes, cosine_lr, engine_options, grad_norm_after_step, grad_norm_before_step, ensure_distributed_env, initialize,
    load_causal_lm, peak_memory_bytes, rank, release_freed_memory, set_lr, tune_cpu_allocator, world_size,
)
from tso_train.errors import NonFiniteLossError, TSOTrainError
from tso_train.logprobs import SequenceLogps
from tso_train.metrics import MetricsLog
from tso_train.mlp import use_lean_mlp
from tso_train.packing import enable_packing, resolve_packing
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
    """Conversations from Parquet or JSONL with a `messages` column; one-line errors on bad rows."""
    path = Path(path)
    if not path.is_file():
        raise TSOTrainError(f"{path}: no such file")
    rows: list = []
    if path.suffix in (".jsonl", ".json"):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TSOTrainError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if "messages" not in obj:
                raise TSOTrainError(f"{path}:{n}: field 'messages': missing")
            rows.append(obj["messages"])
    else:
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TSOTrainError(f"{path}: not a Parquet file ({exc})") from None
        if "messages" not in table.column_names:
            raise TSOTrainError(f"{path}: missing column 'messages' (list<struct<role, content>>)")
        rows = table.column("messages").to_pylist()
    conversations = []
    for i, messages in enumerate(rows):
        messages = [{"role": m.get("role"), "content": m.get("content")} for m in (messages or [])]
        _check_roles_sft(path, i, messages)
        conversations.append(messages)
    if not conversations:
        raise TSOTrainError(f"{path}: no conversations")
    return conversations


def sft(cfg: SFTConfig, progress=None) -> dict:
    ensure_distributed_env()
    tune_cpu_allocator()
    out = Path(cfg.out)
    conversations = read_conversations(cfg.data)
    check_batch_sizes(cfg.global_batch, cfg.micro_batch, world_size())
    if cfg.resume and not ckpt.has_engine_state(out):
        raise TSOTrainError(f"--resume: no checkpoint under {out / ckpt.CHECKPOINT_DIR}")
    if not cfg.resume and ckpt.has_engine_state(out):
        raise TSOTrainError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    lm, tokenizer = load_causal_lm(cfg.model, bf16=cfg.bf16)
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    seqs: list[EncodedSequence] = []
    dropped = 0
    for messages in conversations:
        s = encode_conversation(tokenizer, messages)
        if cfg.max_length is not None and len(s) > cfg.max_length:
            s = EncodedSequence(s.input_ids[: cfg.max_length], s.label_mask[: cfg.max_length])
        if not s.label_mask[1:].any():
            dropped += 1
            continue
        seqs.append(s)
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
    fingerprint = {"n": len(seqs), "global_batch": gb, "micro_batch": cfg.micro_batch, "seed": cfg.seed,
                   "epochs": cfg.epochs, "world_size": world_size()}
    out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(out / "metrics.jsonl", enabled=rank() == 0)
    start = {"epoch": 0, "step": 0, "global_step": 0}
    if cfg.resume:
        state = ckpt.load_engine_state(engine, out)
        if state.get("fingerprint") != fingerprint:
            raise TSOTrainError(f"--resume: {out} was trained with other settings")
        start = {k: state[k] for k in start}
        log.truncate_after(start["global_step"])
    else:
        log.reset()
    if rank() == 0:
        (out / "run.json").write_text(json.dumps({**{k: v for k, v in asdict(cfg).items() if k != "on_step"},
                                                  "n_conversations": len(seqs), "n_dropped": dropped,
                                                  "global_batch_used": gb}, indent=2))
    if progress is not None:
        progress.start(total, done=start["global_step"])
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
                raise NonFiniteLossError(f"non-finite loss at step {global_step + 1}; stopped before the update")
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
            if progress is not None:
                progress.update(row)
            if cfg.save_every and global_step % cfg.save_every == 0 and global_step < total:
                nxt = (epoch, step + 1) if step + 1 < steps_per_epoch else (epoch + 1, 0)
                ckpt.save_engine_state(engine, out, f"step-{global_step}", {
                    "fingerprint": fingerprint, "epoch": nxt[0], "step": nxt[1], "global_step": global_step})
    ckpt.save_hf_policy(engine, lm, tokenizer, out, "final", cfg.zero)
    if progress is not None:
        progress.stop()
    return {"out": str(out), "steps": global_step, "last": last, "n": len(seqs), "n_dropped": dropped}
