"""The one small interface every generation backend implements (transformers, openai,
vllm). Judging uses the same backends: a judge prompt is just another conversation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    """Paper defaults for evaluation generation: temperature 0.7, top-p 0.9, 2048 tokens."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 2048
    seed: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Request:
    """One completion to make. ``key`` is the caller's id (a response or judgment id)."""

    key: str
    messages: list[dict[str, str]]
    params: SamplingParams
    sample_index: int = 0
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """The outcome of one request: text, or ``error`` when it failed after all retries."""

    key: str
    text: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    latency_s: float = 0.0
    attempts: int = 1
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


class Backend(Protocol):
    """Conversation in; text, token counts and finish reason out.

    ``run`` yields one Result per Request, in any order, as soon as each is done, so the
    caller can flush and show progress. A failed request yields a Result with ``error``;
    ``run`` raises only for problems that make every request fail (bad configuration).
    """

    name: str

    def run(self, requests: Iterable[Request]) -> Iterator[Result]: ...

    def close(self) -> None: ...
