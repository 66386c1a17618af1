"""Every performance measure of the trainer, as named switches in one place.

Each switch replaces a plain path that stays in the code; the plain path is the reference the
fast one is tested against (``SpeedSwitches.readable()`` turns every switch off):

* ``lean_mlp``: gated-SiLU MLPs keep only gate(x) and up(x) for backward (tso_train.mlp; ZeRO
  0-2). Tested against autograd on the same module (gradcheck in tso_train.mlp, and
  tests/train/test_train_logprobs.py on a Llama).
* ``trim_heap``: on CPU with glibc, ``malloc_trim(0)`` after each backward pass and each
  reference pass, so the heap's freed holes go back to the OS (``TSO_TRAIN_NO_MALLOPT=1`` turns
  it off). It changes no number.
* ``pack_on_cpu``, ``pack_on_gpu``: the default of ``--packing/--no-packing``, one packed row per
  micro-batch (tso_train.packing). Tested against padded micro-batches
  (tests/train/test_train_fit.py).
* ``varlen_attention``: a packed row attends with ONE variable-length flash-attention call per
  layer on CUDA (bf16/fp16) instead of one SDPA call per sequence (tso_train.attention). Tested
  against padded micro-batches (tests/train/test_train_cuda.py, on a GPU; the glue on CPU in
  tests/train/test_train_attention.py).
* ``flex_attention`` (off by default): where varlen attention does not run, one compiled
  ``flex_attention`` call per layer with a block-diagonal mask instead of per-sequence SDPA.
  Tested like ``varlen_attention``.
* ``compile_layers`` (off by default): each decoder layer through ``torch.compile`` (ZeRO 0-2,
  GPU only; the first steps pay for the compilation).
* ``fused_adamw``: torch's fused AdamW kernel on CPU.
* ``skip_identity_allreduce``: one rank at ZeRO 0 skips DeepSpeed's gradient-bucket "reduce",
  an identity there.
* ``skip_inference_comm_op``: DeepSpeed's shared-memory op for tensor-parallel inference is not
  compiled when it starts on CPU (training never uses it); start-up only.
* ``fused_lm_head`` (off by default): the LM head computed chunk by chunk, its logits recomputed
  in backward instead of kept (less memory, slower on CPU). Tested against the plain head
  (tests/train/test_train_logprobs.py).
* ``freeze_gc_at_exit``: the CLI leaves a finished run's objects to the OS instead of Python's
  final garbage collection; exit only.

tests/train/test_train_speed.py trains with every switch off and with the defaults and checks
the two give the same numbers.

Where they are applied: the CLI builds the switches (``SpeedSwitches.from_environment()``: the
defaults, less what the user's environment turns off) and passes them in the command's config
(``FitConfig.speed``, ``SFTConfig.speed``; a script calling `fit` or `sft` gets the defaults);
the engine start (tso_train.trainer.Trainer.start, tso_train.engine.initialize) and the CLI's exit
apply each to what it concerns. No library function turns a measure on by itself or reads the
environment for one. What each measure gains is in docs/benchmarks.md (`bench_train`, and the
GPU runs), measured side by side with ``benchmarks/bench_train.py`` and ``bench_train_gpu.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions that need it: the CLI imports this module
    from torch import nn

# a user's off switch for the heap trimming (the name predates the switch; kept for scripts that set it)
TRIM_HEAP_OFF_VARIABLE = "TSO_TRAIN_NO_MALLOPT"


@dataclass(frozen=True)
class SpeedSwitches:
    lean_mlp: bool = True
    trim_heap: bool = True
    pack_on_cpu: bool = True
    pack_on_gpu: bool = True
    varlen_attention: bool = True
    flex_attention: bool = False
    compile_layers: bool = False
    fused_adamw: bool = True
    skip_identity_allreduce: bool = True
    skip_inference_comm_op: bool = True
    fused_lm_head: bool = False
    freeze_gc_at_exit: bool = True

    @classmethod
    def from_environment(cls) -> SpeedSwitches:
        """The defaults, with ``TSO_TRAIN_NO_MALLOPT=1`` turning the heap trimming off."""
        return cls(trim_heap=not os.environ.get(TRIM_HEAP_OFF_VARIABLE))

    @classmethod
    def readable(cls) -> SpeedSwitches:
        """Every switch off: the plain paths the fast ones are tested against.

        >>> any(getattr(SpeedSwitches.readable(), f.name) for f in fields(SpeedSwitches))
        False
        """
        return cls(**{f.name: False for f in fields(cls)})

    def packing(self, requested: bool | None, on_cuda: bool, bf16: bool = False) -> bool:
        """Whether micro-batches are packed: ``--packing``/``--no-packing`` when given, else the
        default for the device: packed on CPU, where it saves the padded positions' compute; on a
        GPU packed when a packed row attends in one flash-attention call per layer (bf16 and torch's
        varlen attention), padded otherwise, where per-sequence attention calls measured several
        times slower (docs/benchmarks.md, the GPU runs).

        >>> s = SpeedSwitches()
        >>> s.packing(None, on_cuda=False), s.packing(True, on_cuda=True), s.packing(False, on_cuda=False)
        (True, True, False)
        >>> s.packing(None, on_cuda=True, bf16=False)  # fp32 on a GPU: no flash kernel, padded
        False
        >>> SpeedSwitches(varlen_attention=False).packing(None, on_cuda=True, bf16=True)  # per-sequence calls
        False
        """
        if requested is not None:
            return requested
        if on_cuda:
            return self.pack_on_gpu and bf16 and packed_attention_kernel(self, on_cuda=True) == "varlen"
        return self.pack_on_cpu


def heap_trimmer(switches: SpeedSwitches, on_cuda: bool) -> Callable[[], None]:
    """What to call when a pass has just freed its activations: glibc's ``malloc_trim(0)``, so
    the heap's free holes are handed back to the OS, or nothing (switched off, on a GPU machine,
    outside glibc). glibc serves training's large, varying tensors from its heap, whose freed
    holes would otherwise stay resident."""
    if not switches.trim_heap or on_cuda:
        return _nothing
    try:
        import ctypes

        malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return _nothing
    return lambda: malloc_trim(0)


def _nothing() -> None:
    return None


def apply_model_switches(model: nn.Module, switches: SpeedSwitches, zero_stage: int) -> None:
    """The model-level measures, once DeepSpeed has started (``zero_stage`` is the stage it
    runs, which a --deepspeed-config may have set): the lean MLP, except under ZeRO-3, whose
    partitioned weights are whole only inside their own module's call."""
    if switches.lean_mlp and zero_stage < 3:
        from tso_train.mlp import use_lean_mlp

        use_lean_mlp(model)
    if switches.compile_layers and zero_stage < 3:
        compile_decoder_layers(model)


def compile_decoder_layers(model: nn.Module) -> int:
    """``torch.compile`` each decoder layer in place (dynamic shapes: micro-batch lengths vary);
    returns how many. Layers of one model share the compiled code."""
    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def packed_attention_kernel(switches: SpeedSwitches, on_cuda: bool) -> str:
    """The kernel packed rows attend with (tso_train.attention.choose_kernel).

    >>> packed_attention_kernel(SpeedSwitches(), on_cuda=False)
    'segments'
    """
    from tso_train.attention import choose_kernel

    return choose_kernel(switches.varlen_attention, switches.flex_attention, "cuda" if on_cuda else "cpu")
