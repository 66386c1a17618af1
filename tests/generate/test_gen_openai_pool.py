"""The openai backend with several client processes: the concurrency and rate limits are
split, one backend serves several runs, a worker that dies mid-run gives a clear error,
and an unreachable endpoint fails clearly before any request."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest

from tso_data.errors import TSODataError
from tso_data.generate.backend import Request, SamplingParams
from tso_data.generate.limits import RetryPolicy
from tso_data.generate.openai_backend import OpenAIBackend, OpenAISettings
from tso_data.generate.stub_server import StubServer


def _requests(prefix: str, count: int) -> list[Request]:
    return [Request(key=f"{prefix}{i}", messages=[{"role": "user", "content": f"{prefix} {i}"}],
                    params=SamplingParams(max_tokens=8)) for i in range(count)]


def test_share_splits_concurrency_and_rate_limits() -> None:
    settings = OpenAISettings(base_url="http://127.0.0.1:1/v1", model="m", concurrency=67, processes=3,
                              requests_per_minute=600.0, tokens_per_minute=None)
    shares = [settings.share(i) for i in range(3)]
    assert [s.concurrency for s in shares] == [23, 22, 22]
    assert all(s.processes == 1 and s.requests_per_minute == pytest.approx(200.0) for s in shares)
    assert all(s.tokens_per_minute is None for s in shares)


def test_one_pool_serves_several_runs_with_every_request_answered_once() -> None:
    stub = StubServer(latency_s=0.01).start_in_thread()
    backend = OpenAIBackend(OpenAISettings(base_url=stub.base_url, model="stub", concurrency=6, processes=2))
    try:
        first = list(backend.run(_requests("a", 40)))
        second = list(backend.run(_requests("b", 3)))  # fewer requests than the workers' share
        empty = list(backend.run([]))
    finally:
        backend.close()
        stub.stop()
    assert sorted(r.key for r in first) == sorted(f"a{i}" for i in range(40))
    assert all(r.ok and r.text == f"answer 1 to: {r.key[0]} {r.key[1:]}" for r in first)
    assert sorted(r.key for r in second) == ["b0", "b1", "b2"] and empty == []
    assert Counter(e.key for e in stub.server.log) == Counter(
        [f"a {i}" for i in range(40)] + [f"b {i}" for i in range(3)])


def test_a_worker_killed_mid_run_stops_the_run_with_a_clear_error() -> None:
    stub = StubServer(latency_s=0.05).start_in_thread()
    backend = OpenAIBackend(OpenAISettings(base_url=stub.base_url, model="stub", concurrency=4, processes=2))
    received = []
    try:
        with pytest.raises(TSODataError, match=r"openai client process \d stopped unexpectedly .*rerun"):
            for result in backend.run(_requests("k", 200)):
                received.append(result)
                if len(received) == 4:
                    os.kill(backend._pool._workers[0].process.pid, signal.SIGKILL)
    finally:
        backend.close()
        stub.stop()
    assert 4 <= len(received) < 200 and all(r.ok for r in received)


def test_unreachable_endpoint_fails_before_any_request() -> None:
    settings = OpenAISettings(base_url="http://127.0.0.1:9/v1", model="m", concurrency=4, processes=2,
                              retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02))
    backend = OpenAIBackend(settings)
    try:
        with pytest.raises(TSODataError, match=r"endpoint http://127.0.0.1:9/v1 unreachable after 2 attempts"):
            list(backend.run(_requests("u", 3)))
    finally:
        backend.close()
