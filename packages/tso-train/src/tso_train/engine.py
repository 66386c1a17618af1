"""DeepSpeed set-up shared by `fit` and `sft`: process group, config, optimiser, model loading."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tso_train.errors import TSOTrainError

if TYPE_CHECKING:
    from tso_train.settings import EngineSettings


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


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


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


def build_ds_config(cfg: EngineSettings, global_batch: int) -> dict[str, Any]:
    """The DeepSpeed config from the settings, at ``global_batch`` (the settings' own, or the
    one a small part was clamped to); a --deepspeed-config file is deep-merged over it (its keys
    win, except batch sizes, which must agree with the flags)."""
    gas = check_batch_sizes(global_batch, cfg.micro_batch, world_size())
    on_gpu = torch.cuda.is_available()
    zero: dict[str, Any] = {"stage": cfg.zero}
    if cfg.offload:
        if cfg.zero == 0:
            raise TSOTrainError("--offload needs --zero 1, 2 or 3")
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
        if cfg.zero == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    if cfg.zero == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        "train_batch_size": global_batch,
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.bf16},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.lr,
                "betas": list(cfg.adam_betas),
                "eps": cfg.adam_eps,
                "weight_decay": cfg.weight_decay,
                # torch's AdamW: DeepSpeed's FusedAdam would be compiled first. With offload on a
                # GPU machine DeepSpeed's CPU Adam is the fast choice.
                "torch_adam": not (on_gpu and cfg.offload),
                **({"fused": True} if cfg.speed.fused_adamw and not on_gpu else {}),
            },
        },
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.deepspeed_config:
        path = Path(cfg.deepspeed_config)
        try:
            user = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TSOTrainError(f"{path}: cannot read DeepSpeed config ({exc})") from None
        config = _deep_merge(config, user)
        if user.get("train_batch_size", global_batch) != global_batch or user.get(
            "train_micro_batch_size_per_gpu", cfg.micro_batch
        ) != cfg.micro_batch:
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
        raise TSOTrainError(
            f"--model {path}: not a transformers model directory or id ({str(exc).splitlines()[0]})"
        ) from None
    architectures = getattr(config, "architectures", None) or []
    causal_lm = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
    if architectures and not any(a.endswith(causal_lm) for a in architectures):
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


def start_training_process(cfg: EngineSettings):
    """Once every check has passed (a refused command leaves the process alone): the process
    group's environment, then the model and tokenizer of ``cfg.model``."""
    ensure_distributed_env()
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
    one machine would rebuild each other's ops."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "TORCH_EXTENSIONS_DIR" not in os.environ and sys.prefix != sys.base_prefix and os.access(sys.prefix, os.W_OK):
        os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(sys.prefix) / "torch_extensions")


def _skip_shared_memory_comm_op() -> None:
    """DeepSpeed compiles a shared-memory communication op whenever it sets up its process
    group on CPU. Only its inference all-reduce (tensor-parallel inference) uses the op;
    training's collectives go through torch.distributed, and tso-train never runs DeepSpeed
    inference (SpeedSwitches.skip_inference_comm_op)."""
    import importlib

    try:  # (`from deepspeed.comm import torch` would name the torch package deepspeed.comm imports)
        ds_comm_torch = importlib.import_module("deepspeed.comm.torch")
    except ImportError:  # pragma: no cover - another DeepSpeed layout: it builds the op as before
        return
    if hasattr(ds_comm_torch, "build_shm_op"):
        ds_comm_torch.build_shm_op = lambda: None


def op_build_notice(offload: bool, on_gpu: bool) -> str | None:
    """The line to show before DeepSpeed compiles an op this run needs and the environment's
    cache lacks: its CPU Adam, with --offload on a GPU machine (on CPU no op is compiled).

    >>> op_build_notice(offload=False, on_gpu=True) is None
    True
    """
    if not (on_gpu and offload):
        return None
    cache = os.environ.get("TORCH_EXTENSIONS_DIR")
    if cache and (Path(cache) / "cpu_adam" / "cpu_adam.so").is_file():
        return None
    return "building DeepSpeed's CPU Adam op for --offload (once per environment; a minute or more)…"


def initialize(module: nn.Module, cfg: EngineSettings, global_batch: int, *,
               weight_decay_module: nn.Module | None = None):
    """Start DeepSpeed on ``module`` with the settings' engine, at ``global_batch``; returns the
    engine (its optimiser is engine.optimizer). The switches of ``cfg.speed`` that concern the
    engine apply here."""
    ensure_distributed_env()
    prepare_deepspeed_import()
    import deepspeed

    if cfg.speed.skip_inference_comm_op:
        _skip_shared_memory_comm_op()
    notice = op_build_notice(cfg.offload, torch.cuda.is_available())
    if notice and rank() == 0:
        print(notice, file=sys.stderr, flush=True)

    engine, _, _, _ = deepspeed.initialize(
        model=module,
        model_parameters=param_groups(weight_decay_module or module, cfg.weight_decay),
        config=build_ds_config(cfg, global_batch),
    )
    if cfg.speed.skip_identity_allreduce and world_size() == 1 and cfg.zero == 0:
        # one rank at ZeRO 0: the gradient all-reduce is an identity, yet DeepSpeed would flatten
        # every gradient into a bucket, "reduce" it and copy it back at each optimiser step
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


def max_over_ranks(value: int) -> int:
    return int(all_reduce_max(torch.tensor([value], dtype=torch.float64))[0])


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
