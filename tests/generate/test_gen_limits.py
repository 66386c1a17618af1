"""Back-off, Retry-After and token buckets."""

from __future__ import annotations

import asyncio
import random
import time

from hypothesis import given
from hypothesis import strategies as st

from tso_data.generate.limits import RetryPolicy, TokenBucket, parse_retry_after


@given(attempt=st.integers(1, 30), base=st.floats(0.01, 5), cap=st.floats(0.01, 120), seed=st.integers(0, 10**6))
def test_backoff_is_bounded_and_grows(attempt: int, base: float, cap: float, seed: int) -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=base, max_delay_s=cap)
    delay = policy.delay(attempt, None, random.Random(seed))
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert ceiling / 2 <= delay <= ceiling


@given(retry_after=st.floats(0, 600), attempt=st.integers(1, 10))
def test_retry_after_is_never_undercut(retry_after: float, attempt: int) -> None:
    delay = RetryPolicy(base_delay_s=0.1).delay(attempt, retry_after, random.Random(0))
    assert retry_after <= delay <= retry_after + 1.0


def test_retry_after_header_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "-4"}) == 0.0


def test_token_bucket_paces_requests_per_minute() -> None:
    # 600/min = 10/s with a burst of 600: take the burst, then 5 more need ~0.5 s.
    async def main() -> float:
        bucket = TokenBucket(600)
        await bucket.acquire(600)
        start = time.monotonic()
        for _ in range(5):
            await bucket.acquire(1)
        return time.monotonic() - start

    elapsed = asyncio.run(main())
    assert 0.4 <= elapsed <= 1.5


def test_token_bucket_debt_delays_the_next_request() -> None:
    clock = [0.0]
    bucket = TokenBucket(60, clock=lambda: clock[0])
    bucket.take(10)
    bucket.give_back(-60)  # used 60 more tokens than estimated
    assert bucket.wait_time(1) > 0
    clock[0] = 11.0
    assert bucket.wait_time(1) == 0
