"""The reusable request loop: run Requests through a Backend, stream the Results, hand
them to ``on_flush`` in batches (every ``flush_every`` results or ``flush_seconds``,
whichever comes first, and at the end), show progress and return a summary.

``on_flush`` is where callers persist (generation writes response/failure shards, judging
writes judgment shards, each with :func:`tso_data.shards.write_shard`). Its time is
measured separately, so benchmarks can tell catalog writes from waiting on the model.

The backend is drained on a helper thread so that time-based flushes happen even while
no result arrives (e.g. every request is waiting out a ``Retry-After``). On Ctrl-C (or
any error) the results already received are flushed before the error propagates: a
kill -9 loses at most the results of the last ``flush_seconds`` / ``flush_every``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tso_data.generate.backend import Backend, Request, Result
from tso_data.redact import redact

OnFlush = Callable[[list[Result]], None]
_END = object()


@dataclass
class RunSummary:
    requests: int = 0
    ok: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # attempts beyond the first, over all requests
    wall_s: float = 0.0
    flush_s: float = 0.0  # time spent inside on_flush (catalog writes)
    flushes: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # error text -> count (first 80 chars)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def add(self, other: RunSummary) -> None:
        """Accumulate another run (e.g. turn 2 of multi-turn prompts) into this one."""
        for name in ("requests", "ok", "failed", "prompt_tokens", "completion_tokens", "retries", "flushes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.wall_s += other.wall_s
        self.flush_s += other.flush_s
        for error, count in other.errors.items():
            self.errors[error] = self.errors.get(error, 0) + count

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "retries": self.retries,
            "wall_s": round(self.wall_s, 3),
            "flush_s": round(self.flush_s, 3),
            "flushes": self.flushes,
            "requests_per_s": round(self.requests_per_s, 2),
            "completion_tokens_per_s": round(self.completion_tokens_per_s, 2),
            "errors": dict(self.errors),
        }


def run_requests(
    backend: Backend,
    requests: Sequence[Request] | Iterable[Request],
    *,
    on_flush: OnFlush,
    flush_every: int = 256,
    flush_seconds: float = 30.0,
    progress: bool = True,
    description: str = "generating",
    total: int | None = None,
    console: Console | None = None,
) -> RunSummary:
    """Run every request through ``backend``; return counts, tokens and timings.

    Results reach ``on_flush`` in arrival order, each exactly once. ``total`` defaults to
    ``len(requests)`` when it has one (for the progress bar's ETA).
    """
    if flush_every < 1:
        raise ValueError("flush_every must be >= 1")
    if total is None and isinstance(requests, Sequence):
        total = len(requests)
    summary = RunSummary()
    started = time.monotonic()
    batch = _Batch(on_flush, summary, started)
    results: queue.Queue[object] = queue.Queue(maxsize=max(1024, 4 * flush_every))
    stop = threading.Event()
    thread = threading.Thread(target=_drain, args=(backend, requests, results, stop), daemon=True)
    bar = _ProgressBar(description, total, enabled=progress, console=console)
    thread.start()
    try:
        with bar:
            while True:
                timeout = max(0.0, flush_seconds - (time.monotonic() - batch.last_flush))
                try:
                    item = results.get(timeout=timeout if batch.pending else max(timeout, 0.5))
                except queue.Empty:
                    batch.flush()
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Result)
                _count(summary, item)
                bar.advance(item)
                batch.pending.append(item)
                if len(batch.pending) >= flush_every or time.monotonic() - batch.last_flush >= flush_seconds:
                    batch.flush()
    finally:
        stop.set()
        batch.flush()  # keep what arrived, whatever happens next
        summary.wall_s = time.monotonic() - started
    thread.join(timeout=5.0)
    return summary


class _Batch:
    """The results not yet handed to ``on_flush``; :meth:`flush` hands them over and times it."""

    def __init__(self, on_flush: OnFlush, summary: RunSummary, started: float) -> None:
        self.on_flush = on_flush
        self.summary = summary
        self.pending: list[Result] = []
        self.last_flush = started

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        t0 = time.monotonic()
        self.on_flush(batch)
        self.summary.flush_s += time.monotonic() - t0
        self.summary.flushes += 1
        self.last_flush = time.monotonic()


def _drain(backend: Backend, requests: Iterable[Request], out: queue.Queue[object], stop: threading.Event) -> None:
    try:
        for result in backend.run(requests):
            if stop.is_set():
                return
            out.put(result)
    except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
        out.put(exc)
    out.put(_END)


def _count(summary: RunSummary, result: Result) -> None:
    summary.requests += 1
    summary.retries += max(0, result.attempts - 1)
    summary.prompt_tokens += result.prompt_tokens or 0
    summary.completion_tokens += result.completion_tokens or 0
    if result.ok:
        summary.ok += 1
    else:
        summary.failed += 1
        error = redact(result.error or "no text")[:80]
        summary.errors[error] = summary.errors.get(error, 0) + 1


class _ProgressBar:
    """A rich bar with rate, tokens/s, failures and ETA; updated at most ~10 times/s."""

    def __init__(self, description: str, total: int | None, *, enabled: bool, console: Console | None) -> None:
        self.enabled = enabled
        self.description = description
        self.total = total
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]:.1f} req/s  {task.fields[tok_s]:.0f} tok/s  failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
        )
        self._task = None
        self._unreported = 0
        self._done = 0
        self._failed = 0
        self._tokens = 0
        self._start = time.monotonic()
        self._last = 0.0

    def __enter__(self) -> _ProgressBar:
        self.progress.__enter__()
        self._task = self.progress.add_task(self.description, total=self.total, rate=0.0, tok_s=0.0, failed=0)
        self._start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self._update()
        self.progress.__exit__(*exc)

    def advance(self, result: Result) -> None:
        self._unreported += 1
        self._done += 1
        self._failed += 0 if result.ok else 1
        self._tokens += result.completion_tokens or 0
        if self.enabled and time.monotonic() - self._last >= 0.1:
            self._update()

    def _update(self) -> None:
        if self._task is None:
            return
        elapsed = max(1e-9, time.monotonic() - self._start)
        self.progress.update(
            self._task,
            advance=self._unreported,
            rate=self._done / elapsed,
            tok_s=self._tokens / elapsed,
            failed=self._failed,
        )
        self._unreported = 0
        self._last = time.monotonic()
