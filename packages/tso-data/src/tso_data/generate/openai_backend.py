"""Backend for any OpenAI-compatible chat endpoint (vLLM serve, SGLang, TGI,
`transformers serve`, hosted APIs) through the official async ``openai`` client.

Requests run on an asyncio loop in a background thread with a fixed pool of
``concurrency`` workers; ``run`` yields Results as they complete. With ``processes`` > 1
the requests are spread over that many client processes (:mod:`openai_pool`), each with
its own event loop and share of the concurrency: one Python process spends about 1 ms of
CPU per request in the SDK, so a single process cannot keep hundreds of requests in
flight against a fast server. Each request is retried
on 429, 5xx, 408/409, timeouts, connection errors and malformed bodies with exponential
back-off and jitter (``Retry-After`` honoured); other 4xx fail at once. Optional
requests-per-minute and tokens-per-minute buckets pace the workers.

The API key is read from the environment by the caller and only handed to the client:
it is never stored, printed or logged.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import openai

from tso_data.errors import TSODataError
from tso_data.generate.backend import Request, Result
from tso_data.generate.limits import RetryPolicy, TokenBucket, parse_retry_after
from tso_data.redact import redact, register_secret

try:  # openai >= 3 ships on httpx2; older releases on httpx
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _httpx  # type: ignore[no-redef]

_DONE = object()


@dataclass(frozen=True)
class OpenAISettings:
    base_url: str
    model: str  # the name the server knows the model by
    api_key: str | None = None
    concurrency: int = 64
    request_timeout_s: float = 600.0
    retry: RetryPolicy = RetryPolicy()
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    processes: int = 1  # client processes; > 1 spreads the concurrency over them

    def share(self, index: int) -> OpenAISettings:
        """The settings of client process ``index`` of ``processes``: its part of the
        concurrency and of the rate limits (single-process settings)."""
        n = self.processes
        concurrency = self.concurrency // n + (1 if index < self.concurrency % n else 0)
        return replace(
            self,
            concurrency=max(1, concurrency),
            requests_per_minute=self.requests_per_minute / n if self.requests_per_minute else None,
            tokens_per_minute=self.tokens_per_minute / n if self.tokens_per_minute else None,
            processes=1,
        )


def auto_processes(concurrency: int, cpus: int | None = None) -> int:
    """Client processes for ``concurrency`` requests in flight: one per 32, at most one
    per CPU core (one process spends ~1 ms of CPU per request, and queueing delay grows
    well before it saturates its core).

    >>> auto_processes(16, cpus=2), auto_processes(64, cpus=2), auto_processes(256, cpus=2)
    (1, 2, 2)
    >>> auto_processes(1024, cpus=16)
    16
    """
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(cpus, concurrency // 32))


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Fatal(Exception):
    """This request cannot succeed by retrying (e.g. 400 Bad Request)."""


class OpenAIBackend:
    name = "openai"

    def __init__(self, settings: OpenAISettings, *, seed: int | None = None) -> None:
        if settings.concurrency < 1:
            raise TSODataError(f"--concurrency must be >= 1, got {settings.concurrency}")
        if settings.processes < 1:
            raise TSODataError(f"--client-processes must be >= 1, got {settings.processes}")
        self.settings = settings
        register_secret(settings.api_key)  # also in client processes: they build their own backend
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._pool = None
        if settings.processes > 1:
            from tso_data.generate.openai_pool import ClientPool

            # started now, so the processes import the SDK while the caller plans its job
            self._pool = ClientPool(settings, seed=seed)

    # -- public --------------------------------------------------------------------------

    def start(self) -> None:
        """Wait until the client processes are up and have reached the endpoint (a run
        does this itself; call it to time start-up apart from the requests)."""
        if self._pool is not None:
            self._pool.start()

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        if self._pool is not None:
            yield from self._pool.run(requests)
            return
        out: queue.Queue[object] = queue.Queue()
        thread = threading.Thread(
            target=lambda: asyncio.run(self._main(iter(requests), out)), name="openai-backend", daemon=True
        )
        self._stop.clear()
        thread.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self._stop.set()
            thread.join(timeout=5.0)

    def close(self) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.close()

    # -- the request loop (also run by each client process of openai_pool) ----------------

    def make_client(self) -> openai.AsyncOpenAI:
        s = self.settings
        return openai.AsyncOpenAI(
            base_url=s.base_url,
            api_key=s.api_key or "none",  # local servers accept any key
            max_retries=0,  # we retry ourselves, with our policy and accounting
            timeout=s.request_timeout_s,
            http_client=_http_client(s),
        )

    async def serve(
        self,
        client: openai.AsyncOpenAI,
        next_request: Callable[[], Awaitable[Request | None]],
        emit: Callable[[Result], None],
    ) -> None:
        """Complete requests from ``next_request`` (None: no more) with ``concurrency``
        workers, handing each Result to ``emit``."""
        s = self.settings
        rpm = TokenBucket(s.requests_per_minute) if s.requests_per_minute else None
        tpm = TokenBucket(s.tokens_per_minute) if s.tokens_per_minute else None

        async def worker() -> None:
            while not self._stop.is_set():
                request = await next_request()
                if request is None:
                    return
                emit(await self.complete(client, request, rpm, tpm))

        await asyncio.gather(*(worker() for _ in range(s.concurrency)))

    async def _main(self, requests: Iterator[Request], out: queue.Queue[object]) -> None:
        client = self.make_client()

        async def next_request() -> Request | None:
            return next(requests, None)  # synchronous: no other worker runs meanwhile

        try:
            await self.preflight(client)
            await self.serve(client, next_request, out.put)
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            out.put(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
        finally:
            await client.close()
            out.put(_DONE)

    async def preflight(self, client: openai.AsyncOpenAI) -> None:
        """Fail the whole run clearly when the endpoint can't be reached or rejects the key."""
        policy = self.settings.retry
        last = ""
        for attempt in range(1, policy.max_attempts + 1):
            try:
                await client.models.list()
                return
            except openai.AuthenticationError as exc:
                raise TSODataError(
                    f"{self.settings.base_url}: authentication failed ({exc.status_code}); check the API key variable"
                ) from None
            except openai.APIStatusError as exc:
                if exc.status_code < 500 and exc.status_code != 429:
                    return  # the server answers; some don't implement /models
                last = f"HTTP {exc.status_code}"
                delay = policy.delay(attempt, parse_retry_after(exc.response.headers), self._rng)
            except (openai.APIConnectionError, openai.APIResponseValidationError) as exc:
                last = type(exc).__name__ + ": " + str(exc)
                delay = policy.delay(attempt, None, self._rng)
            if attempt < policy.max_attempts:
                await asyncio.sleep(delay)
        raise TSODataError(
            f"endpoint {self.settings.base_url} unreachable after {policy.max_attempts} attempts ({last}); "
            "nothing was stored"
        )

    async def complete(
        self,
        client: openai.AsyncOpenAI,
        request: Request,
        rpm: TokenBucket | None,
        tpm: TokenBucket | None,
    ) -> Result:
        policy = self.settings.retry
        started = time.monotonic()
        estimate = _estimate_tokens(request)
        error = ""
        for attempt in range(1, policy.max_attempts + 1):
            if rpm is not None:
                await rpm.acquire(1)
            if tpm is not None:
                await tpm.acquire(estimate)
            try:
                result = await self._attempt(client, request, attempt, started)
                if tpm is not None:
                    tpm.give_back(estimate - (result.prompt_tokens or 0) - (result.completion_tokens or 0))
                return result
            except _Fatal as exc:
                return Result(key=request.key, text=None, latency_s=time.monotonic() - started,
                              attempts=attempt, error=redact(str(exc)))
            except _Retryable as exc:
                error = redact(str(exc))
                if attempt < policy.max_attempts and not self._stop.is_set():
                    await asyncio.sleep(policy.delay(attempt, exc.retry_after_s, self._rng))
        return Result(key=request.key, text=None, latency_s=time.monotonic() - started,
                      attempts=policy.max_attempts, error=f"after {policy.max_attempts} attempts: {error}")

    async def _attempt(self, client: openai.AsyncOpenAI, request: Request, attempt: int, started: float) -> Result:
        try:
            body = await client.post("/chat/completions", body=self._body(request), cast_to=dict)
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status == 429 or status >= 500 or status in (408, 409):
                raise _Retryable(f"HTTP {status}", parse_retry_after(exc.response.headers)) from None
            raise _Fatal(f"HTTP {status}: {_short(exc.message)}") from None
        except openai.APITimeoutError:
            raise _Retryable(f"timeout after {self.settings.request_timeout_s:g} s") from None
        except openai.APIConnectionError as exc:
            raise _Retryable(f"connection error: {_short(str(exc.__cause__ or exc))}") from None
        except (openai.APIResponseValidationError, ValueError, TypeError) as exc:
            raise _Retryable(f"malformed response: {_short(str(exc))}") from None
        try:
            text, finish_reason, usage = _read_completion(body)
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise _Retryable(f"malformed response: {_short(repr(exc))}") from None
        return Result(
            key=request.key,
            text=text,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=finish_reason,
            latency_s=time.monotonic() - started,
            attempts=attempt,
        )

    def _body(self, request: Request) -> dict[str, object]:
        p = request.params
        body: dict[str, object] = {
            "model": self.settings.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages],
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            "n": 1,
        }
        if p.seed is not None:
            body["seed"] = p.seed
        return body


def _read_completion(body: object) -> tuple[str, str | None, dict[str, int]]:
    """(text, finish reason, usage) of a chat completion body; raises on a malformed one.

    >>> _read_completion({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
    ...                   "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    ('hi', 'stop', {'prompt_tokens': 3, 'completion_tokens': 1})
    >>> _read_completion({"choices": []})
    Traceback (most recent call last):
    ...
    IndexError: list index out of range
    """
    if not isinstance(body, dict):
        raise TypeError(f"expected a JSON object, got {type(body).__name__}")
    choice = body["choices"][0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        raise TypeError("no message content")
    usage = body.get("usage") or {}
    return text, choice.get("finish_reason"), usage if isinstance(usage, dict) else {}


def _http_client(s: OpenAISettings) -> object:
    """aiohttp transport when installed (the openai[aiohttp] extra; about half the CPU per
    request of the default), else the default client; pooled for ``concurrency``."""
    limits = _httpx.Limits(max_connections=s.concurrency, max_keepalive_connections=s.concurrency)
    timeout = _httpx.Timeout(s.request_timeout_s, connect=min(10.0, s.request_timeout_s))
    try:
        import aiohttp  # noqa: F401

        return openai.DefaultAioHttpClient(limits=limits, timeout=timeout)
    except (ImportError, RuntimeError):
        default = getattr(openai, "DefaultAsyncHttpx2Client", None) or openai.DefaultAsyncHttpxClient
        return default(limits=limits, timeout=timeout)


def _estimate_tokens(request: Request) -> int:
    """Tokens a request may use, for the tokens-per-minute bucket: ~4 characters a token."""
    chars = sum(len(m["content"]) for m in request.messages)
    return chars // 4 + request.params.max_tokens


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
