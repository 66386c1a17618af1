"""run_requests: every Result reaches on_flush exactly once, in batches bounded by
flush_every, on time when results stall, and before an error propagates."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tso_data.generate.backend import Request, Result, SamplingParams
from tso_data.generate.runner import run_requests


class ScriptedBackend:
    """Yields one Result per Request; ``delays`` seconds before given keys; fails where told."""

    name = "scripted"

    def __init__(self, delays: dict[str, float] | None = None, fail: set[str] | None = None,
                 crash_after: int | None = None) -> None:
        self.delays = delays or {}
        self.fail = fail or set()
        self.crash_after = crash_after

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        for i, request in enumerate(requests):
            if self.crash_after is not None and i == self.crash_after:
                raise RuntimeError("engine died")
            time.sleep(self.delays.get(request.key, 0.0))
            if request.key in self.fail:
                yield Result(request.key, None, attempts=3, error="HTTP 500")
            else:
                yield Result(request.key, f"text {request.key}", prompt_tokens=2, completion_tokens=3)

    def close(self) -> None:
        pass


def _requests(n: int) -> list[Request]:
    return [Request(str(i), [{"role": "user", "content": str(i)}], SamplingParams()) for i in range(n)]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 60), flush_every=st.integers(1, 20), fail=st.sets(st.integers(0, 59), max_size=10))
def test_every_result_flushed_once_in_order(n: int, flush_every: int, fail: set[int]) -> None:
    batches: list[list[Result]] = []
    backend = ScriptedBackend(fail={str(i) for i in fail})
    summary = run_requests(backend, _requests(n), on_flush=batches.append, flush_every=flush_every,
                           flush_seconds=60, progress=False)
    keys = [r.key for batch in batches for r in batch]
    assert keys == [str(i) for i in range(n)]
    assert all(0 < len(batch) <= flush_every for batch in batches)
    n_failed = len([i for i in fail if i < n])
    assert (summary.ok, summary.failed, summary.requests) == (n - n_failed, n_failed, n)
    assert summary.completion_tokens == 3 * (n - n_failed)
    assert summary.retries == 2 * n_failed


def test_time_based_flush_while_results_stall() -> None:
    # Results 0-2 arrive at once, then the backend stalls 1.5 s: they must be flushed
    # during the stall, not after it.
    flushed_at: list[tuple[float, list[str]]] = []
    start = time.monotonic()
    backend = ScriptedBackend(delays={"3": 1.5})
    run_requests(backend, _requests(4), flush_every=100, flush_seconds=0.3, progress=False,
                 on_flush=lambda batch: flushed_at.append((time.monotonic() - start, [r.key for r in batch])))
    first_time, first_keys = flushed_at[0]
    assert first_keys == ["0", "1", "2"]
    assert first_time < 1.0
    assert flushed_at[-1][1] == ["3"]


def test_results_received_before_a_crash_are_flushed() -> None:
    batches: list[list[Result]] = []
    with pytest.raises(RuntimeError, match="engine died"):
        run_requests(ScriptedBackend(crash_after=5), _requests(10), on_flush=batches.append,
                     flush_every=100, flush_seconds=60, progress=False)
    assert [r.key for b in batches for r in b] == ["0", "1", "2", "3", "4"]


def test_flush_time_is_accounted() -> None:
    summary = run_requests(ScriptedBackend(), _requests(10), on_flush=lambda b: time.sleep(0.05),
                           flush_every=5, flush_seconds=60, progress=False)
    assert summary.flushes == 2
    assert summary.flush_s >= 0.1
