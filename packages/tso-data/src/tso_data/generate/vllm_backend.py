"""Backend for vLLM's offline engine (``LLM.chat`` with per-request ``SamplingParams``),
tensor-parallel inside a node. vLLM is imported only here and only when used; install it
with the ``vllm`` extra on a GPU machine (docs/generate.md, "vLLM on a GPU node").
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from types import ModuleType
from typing import Any

from tso_data.errors import TSODataError
from tso_data.generate.backend import Request, Result


@dataclass(frozen=True)
class VLLMSettings:
    path: str
    tensor_parallel_size: int = 1
    batch_size: int = 1024  # requests handed to the engine at once; results flush per chunk
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None


def import_vllm() -> ModuleType:
    try:
        import vllm
    except ImportError as exc:
        raise TSODataError(
            f"the vllm backend needs vLLM ({exc}); on a GPU machine: pip install 'tso-data[vllm]', "
            "or serve the model and use --backend openai"
        ) from None
    return vllm


def build_vllm_inputs(requests: list[Request], vllm: ModuleType) -> tuple[list[list[dict[str, str]]], list[Any]]:
    """Conversations and one ``SamplingParams`` per request (each with its own seed)."""
    conversations = [[{"role": m["role"], "content": m["content"]} for m in r.messages] for r in requests]
    params = [
        vllm.SamplingParams(
            n=1,
            temperature=r.params.temperature,
            top_p=r.params.top_p,
            max_tokens=r.params.max_tokens,
            seed=r.params.seed,
        )
        for r in requests
    ]
    return conversations, params


def engine_kwargs(settings: VLLMSettings) -> dict[str, Any]:
    """Arguments for ``vllm.LLM``.

    >>> engine_kwargs(VLLMSettings("/m", tensor_parallel_size=4))["tensor_parallel_size"]
    4
    """
    kwargs: dict[str, Any] = {
        "model": settings.path,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "dtype": settings.dtype,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
    }
    if settings.max_model_len is not None:
        kwargs["max_model_len"] = settings.max_model_len
    return kwargs


class VLLMBackend:
    name = "vllm"

    def __init__(self, settings: VLLMSettings) -> None:
        if settings.tensor_parallel_size < 1:
            raise TSODataError(f"--tensor-parallel-size must be >= 1, got {settings.tensor_parallel_size}")
        self.settings = settings
        self.vllm = import_vllm()
        self.llm = self.vllm.LLM(**engine_kwargs(settings))

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        it = iter(requests)
        while chunk := list(islice(it, self.settings.batch_size)):
            conversations, params = build_vllm_inputs(chunk, self.vllm)
            started = time.monotonic()
            outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False)
            latency = time.monotonic() - started
            for request, output in zip(chunk, outputs, strict=True):
                completion = output.outputs[0]
                yield Result(
                    key=request.key,
                    text=completion.text,
                    prompt_tokens=len(output.prompt_token_ids or []),
                    completion_tokens=len(completion.token_ids),
                    finish_reason=completion.finish_reason,
                    latency_s=latency,
                )

    def close(self) -> None:
        self.llm = None
