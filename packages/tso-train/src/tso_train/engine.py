"""DeepSpeed set-up shared by `fit` and `sft`: process group, config, optimiser, model loading."""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tso_train.errors import TSOTrainError


def ensure_distributed_env() -> None:
    """Make a plain `python`/`tso-train` start a one-rank process group (gloo on CPU).

    Under `torchrun` or the `deepspeed` launcher these variables are already set.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))


_malloc_trim = None


def tune_cpu_allocator() -> None:
    """On CPU (glibc), arrange for :func:`release_freed_memory` to hand freed heap pages back to
    the OS. glibc serves training's large, varying tensors from its heap (its mmap threshold
    rises with the sizes it sees), and the heap's free holes stay resident: on the benchmark model
    that is ~7 % of peak RSS. Trimming after each backward pass returns them for a few page
    faults; pinning the mmap threshold at 1 MiB instead (our earlier choice) saved a little more
    (~12 %) but faulted every large allocation in afresh: ~50 % slower steps. TSO_TRAIN_NO_MALLOPT=1 turns it off;
    no-op on GPU machines and outside glibc."""
    global _malloc_trim
    if torch.cuda.is_available() or os.environ.get("TSO_TRAIN_NO_MALLOPT"):
        return
    try:
        import ctypes

        _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        _malloc_trim = None


def release_freed_memory() -> None:
    """glibc ``malloc_trim(0)`` when :func:`tune_cpu_allocator` enabled it (after a backward pass,
    when the micro-batch's activations have just been freed)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


@dataclass(frozen=True)
class EngineOptions:
    global_batch: int
    micro_batch: int
    lr: float
    weight_decay: float = 0.05
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    zero: int = 0
    offload: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    deepspeed_config: str | None = None


def engine_options(cfg: object, global_batch: int) -> EngineOptions:
    """The engine options of a fit or sft config (same field names), at ``global_batch``."""
    names = [f.name for f in fields(EngineOptions) if f.name != "global_batch"]
    return EngineOptions(global_batch=global_batch, **{n: getattr(cfg, n) for n in names})


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_batch_sizes(global_batch: int, micro_batch: int, ranks: int) -> int:
    """Gradient-accumulation steps; raise when the global batch does not split evenly.

    >>> check_batch_sizes(256, 4, 8)
    8
    """
    if global_batch <= 0 or micro_batch <= 0:
        raise TSOTrainError("--global-batch and --micro-batch must be positive")
    if global_batch % (micro_batch * ranks):
        raise TSOTrainError(
            f"--global-batch {global_batch} is not divisible by --micro-batch {micro_batch} × "
            f"{ranks} rank(s) = {micro_batch * ranks}"
        )
    return global_batch // (micro_batch * ranks)


def build_ds_config(opts: EngineOptions) -> dict[str, Any]:
    """The DeepSpeed config from the flags; a --deepspeed-config file is deep-merged over it
    (its keys win, except batch sizes, which must agree with the flags)."""
    gas = check_batch_sizes(opts.global_batch, opts.micro_batch, world_size())
    on_gpu = torch.cuda.is_available()
    zero: dict[str, Any] = {"stage": opts.zero}
    if opts.offload:
        if opts.zero == 0:
            raise TSOTrainError("--offload needs --zero 1, 2 or 3")
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
        if opts.zero == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    if opts.zero == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        "train_batch_size": opts.global_batch,
        "train_micro_batch_size_per_gpu": opts.micro_batch,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": opts.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": opts.bf16},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": opts.lr,
                "betas": list(opts.adam_betas),
                "eps": opts.adam_eps,
                "weight_decay": opts.weight_decay,
                # torch's AdamW: no 70 s FusedAdam build on CPU. With offload on a GPU
                # machine DeepSpeed's CPU Adam is the fast choice.
                "torch_adam": not (on_gpu and opts.offload),
                # on CPU, torch's fused kernel: one pass over each tensor and none of the
                # parameter-sized temporaries of the foreach implementation
                **({} if on_gpu else {"fused": True}),
            },
        },
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if opts.deepspeed_config:
        path = Path(opts.deepspeed_config)
        try:
            user = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TSOTrainError(f"{path}: cannot read DeepSpeed config ({exc})") from None
        config = _deep_merge(config, user)
        if user.get("train_batch_size", opts.global_batch) != opts.global_batch or user.get(
            "train_micro_batch_size_per_gpu", opts.micro_batch
        ) != opts.micro_batch:
            raise TSOTrainError(
                f"{path}: batch sizes disagree with --global-batch/--micro-batch; set them with the flags"
            )
        config["gradient_accumulation_steps"] = gas
    return config


def check_model_reference(model: str) -> None:
    """Before any load: a local path that cannot be a model is one line. A name that could be a
    hub id (``org/name``) is left to the loader."""
    path = Path(model).expanduser()
    if path.is_file():
        raise TSOTrainError(f"--model {model}: not a transformers model directory (a file)")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TSOTrainError(f"--model {model}: not a transformers model directory (no config.json)")
        return
    if model.startswith(("/", ".", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model:
        raise TSOTrainError(f"--model {model}: not a transformers model directory (no such directory)")


def load_causal_lm(path: str, *, bf16: bool = False, gradient_checkpointing: bool = False):
    """Load the tokenizer and a causal LM; a clear error when PATH is not one."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise TSOTrainError(f"--model {path}: not a transformers model directory or id ({str(exc).splitlines()[0]})") from None
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures):
        raise TSOTrainError(f"--model {path}: not a causal language model (architectures: {', '.join(architectures)})")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, config=config, dtype=torch.bfloat16 if bf16 else torch.float32
        )
    except (ValueError, OSError) as exc:
        raise TSOTrainError(f"--model {path}: not a causal language model ({str(exc).splitlines()[0]})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise TSOTrainError(f"--model {path}: no usable tokenizer ({str(exc).splitlines()[0]})") from None
    if getattr(tokenizer, "chat_template", None) is None:
        raise TSOTrainError(f"--model {path}: the tokenizer has no chat template")
    disable_dropout(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer


def start_training_process(cfg: object):
    """Once every check has passed (a refused command leaves the process alone): the process
    group's environment, the CPU allocator, then the model and tokenizer of ``cfg.model``."""
    ensure_distributed_env()
    tune_cpu_allocator()
    return load_causal_lm(cfg.model, bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing)


def disable_dropout(model: nn.Module) -> None:
    """Dropout off everywhere: at a reference reset the log-ratio must be exactly 0."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    cfg = getattr(model, "config", None)
    for attr in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if cfg is not None and isinstance(getattr(cfg, attr, None), float):
            setattr(cfg, attr, 0.0)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on biases and norm weights), as is customary."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def prepare_deepspeed_import() -> None:
    """Before DeepSpeed is first imported: name the CPU accelerator on a machine without CUDA
    (DeepSpeed's detection otherwise prints a warning to stdout), and keep DeepSpeed's compiled
    ops per environment — a ``torch_extensions`` folder inside the virtual environment when it
    is writable and the user has not set TORCH_EXTENSIONS_DIR. torch's default cache
    (``~/.cache/torch_extensions``) is keyed by the Python version only, so two environments on
    one machine rebuild each other's ops (55-146 s each time)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "TORCH_EXTENSIONS_DIR" not in os.environ and sys.prefix != sys.base_prefix and os.access(sys.prefix, os.W_OK):
        os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(sys.prefix) / "torch_extensions")


def _skip_shared_memory_comm_op() -> None:
    """DeepSpeed compiles a shared-memory communication op whenever it sets up its process
    group on CPU (about a minute on a cold cache). Only its inference all-reduce (tensor-parallel
    inference) uses the op; training's collectives go through torch.distributed. tso-train never
    runs DeepSpeed inference, so the op is not built."""
    import importlib

    try:  # (`from deepspeed.comm import torch` would name the torch package deepspeed.comm imports)
        ds_comm_torch = importlib.import_module("deepspeed.comm.torch")
    except ImportError:  # pragma: no cover - another DeepSpeed layout: it builds the op as before
        return
    if hasattr(ds_comm_torch, "build_shm_op"):
        ds_comm_torch.build_shm_op = lambda: None


def op_build_notice(opts: EngineOptions, on_gpu: bool) -> str | None:
    """The line to show before DeepSpeed compiles an op this run needs and the environment's
    cache lacks: its CPU Adam, with --offload on a GPU machine (on CPU no op is compiled).

    >>> op_build_notice(EngineOptions(global_batch=8, micro_batch=4, lr=1e-6), on_gpu=False) is None
    True
    """
    if not (on_gpu and opts.offload):
        return None
    cache = os.environ.get("TORCH_EXTENSIONS_DIR")
    if cache and (Path(cache) / "cpu_adam" / "cpu_adam.so").is_file():
        return None
    return "building DeepSpeed's CPU Adam op for --offload (once per environment; a minute or more)…"


def initialize(module: nn.Module, opts: EngineOptions, *, weight_decay_module: nn.Module | None = None):
    """Start DeepSpeed on ``module``; returns the engine (its optimiser is engine.optimizer)."""
    ensure_distributed_env()
    prepare_deepspeed_import()
    import deepspeed

    _skip_shared_memory_comm_op()
    notice = op_build_notice(opts, torch.cuda.is_available())
    if notice and rank() == 0:
        print(notice, file=sys.stderr, flush=True)

    config = build_ds_config(opts)
    engine, _, _, _ = deepspeed.initialize(
        model=module,
        model_parameters=param_groups(weight_decay_module or module, opts.weight_decay),
        config=config,
    )
    if world_size() == 1 and opts.zero == 0:
        # One rank, ZeRO 0: the gradient all-reduce is an identity, yet DeepSpeed would flatten
        # every gradient into a bucket, "reduce" it and copy it back at each optimiser step.
        engine.enable_backward_allreduce = False
    return engine


def set_lr(engine, lr: float) -> None:
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def peak_memory_bytes() -> int:
    """Peak accelerator memory on GPU; the process's peak RSS on CPU."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def cosine_lr(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up then cosine to 0 over one part (``step`` counts from 0).

    >>> [round(cosine_lr(s, 4, 1, 1.0), 3) for s in range(4)]
    [0.5, 1.0, 0.75, 0.25]
    """
    import math

    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))


def grad_norm_before_step(engine) -> float | None:
    """The global gradient norm where DeepSpeed does not report one (ZeRO 0 in fp32, whose
    gradients are whole and already averaged over ranks after the boundary backward)."""
    if engine.zero_optimization_stage() != 0 or engine.bfloat16_enabled():
        return None
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    if not grads:
        return None
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


def grad_norm_after_step(engine, before: float | None) -> float | None:
    reported = engine.get_global_grad_norm()
    if reported is not None:
        return float(reported)
    return before
