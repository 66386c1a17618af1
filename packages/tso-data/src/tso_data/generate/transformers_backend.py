"""Backend for a local Hugging Face model (CPU or GPU): batched ``generate`` with left
padding and the model's own chat template. The embedded default and the test path.

With a seed, each batch seeds torch's generator from its first request's seed, so the
same requests in the same batches give the same texts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tso_data.errors import TSODataError
from tso_data.generate.backend import Request, Result, SamplingParams


@dataclass(frozen=True)
class TransformersSettings:
    path: str
    device: str = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
    dtype: str = "auto"  # 'auto' (the checkpoint's), 'float32', 'bfloat16', 'float16'
    batch_size: int = 8


def batches(requests: Iterable[Request], batch_size: int) -> Iterator[list[Request]]:
    """Consecutive requests in batches of at most ``batch_size`` sharing temperature,
    top-p and max tokens (one ``generate`` call takes one setting).

    >>> p, q = SamplingParams(), SamplingParams(temperature=0.0)
    >>> reqs = [Request(str(i), [], p if i != 2 else q) for i in range(5)]
    >>> [[r.key for r in b] for b in batches(reqs, 2)]
    [['0', '1'], ['2'], ['3', '4']]
    """
    if batch_size < 1:
        raise TSODataError(f"--batch-size must be >= 1, got {batch_size}")
    batch: list[Request] = []
    for request in requests:
        if batch and (len(batch) == batch_size or _setting(batch[0].params) != _setting(request.params)):
            yield batch
            batch = []
        batch.append(request)
    if batch:
        yield batch


def _setting(p: SamplingParams) -> tuple[float, float, int]:
    return (p.temperature, p.top_p, p.max_tokens)


def generation_kwargs(params: SamplingParams) -> dict[str, Any]:
    """``generate`` arguments for ``params``: greedy at temperature 0, else nucleus
    sampling with only temperature and top-p active (top-k off, as the paper samples).

    >>> generation_kwargs(SamplingParams(temperature=0.0, max_tokens=5))
    {'max_new_tokens': 5, 'do_sample': False}
    >>> generation_kwargs(SamplingParams(max_tokens=5))
    {'max_new_tokens': 5, 'do_sample': True, 'temperature': 0.7, 'top_p': 0.9, 'top_k': 0}
    """
    kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens}
    if params.temperature == 0:
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
    return kwargs


class TransformersBackend:
    name = "transformers"

    def __init__(self, settings: TransformersSettings) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # ours is the progress bar that counts
        self.settings = settings
        if not Path(settings.path).exists():
            raise TSODataError(f"model path {settings.path}: not found")
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(settings.path, padding_side="left")
        if self.tokenizer.chat_template is None:
            raise TSODataError(f"model path {settings.path}: the tokenizer has no chat template")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = settings.dtype if settings.dtype == "auto" else getattr(torch, settings.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(settings.path, dtype=dtype).to(self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos])

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        for batch in batches(requests, self.settings.batch_size):
            yield from self._generate(batch)

    def close(self) -> None:
        pass

    def _generate(self, batch: list[Request]) -> list[Result]:
        import torch

        started = time.monotonic()
        texts = [
            self.tokenizer.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False)
            for r in batch
        ]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        params = batch[0].params
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                **generation_kwargs(params),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(self.eos_ids),
            )
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        latency = time.monotonic() - started
        results = []
        for request, tokens, n_prompt in zip(batch, new_tokens, prompt_lengths):
            end = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
            if end is None:
                kept, finish, n_completion = tokens, "length", len(tokens)
            else:
                kept, finish, n_completion = tokens[:end], "stop", end + 1
            results.append(
                Result(
                    key=request.key,
                    text=self.tokenizer.decode(kept, skip_special_tokens=True),
                    prompt_tokens=int(n_prompt),
                    completion_tokens=n_completion,
                    finish_reason=finish,
                    latency_s=latency,
                )
            )
        return results
