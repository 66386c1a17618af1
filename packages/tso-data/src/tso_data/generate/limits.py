"""Retry back-off and rate limits for remote backends (pure logic, no I/O).

Back-off is exponential with full jitter; a server's ``Retry-After`` wins when present.
Rate limits are token buckets refilled continuously (requests per minute, tokens per
minute); a bucket may go into debt when a request used more tokens than estimated.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` counts the first try; delays grow ``base_delay_s * 2**k`` up to
    ``max_delay_s``, each drawn uniformly from [half, full] of that (jitter)."""

    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, failed_attempts: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to wait after ``failed_attempts`` failures (1 = after the first try).

        >>> p = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
        >>> rng = random.Random(0)
        >>> all(0.5 <= p.delay(1, None, rng) <= 1.0 for _ in range(100))
        True
        >>> all(4.0 <= p.delay(10, None, rng) <= 8.0 for _ in range(100))
        True
        >>> p.delay(1, 3.0, rng) >= 3.0
        True
        """
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (failed_attempts - 1))
        jittered = cap * (0.5 + 0.5 * rng.random())
        if retry_after_s is not None:
            # The server said when; add a little jitter so clients don't return in lockstep.
            return retry_after_s + min(1.0, 0.1 * retry_after_s) * rng.random()
        return jittered


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds from a ``retry-after-ms`` or ``Retry-After`` header (seconds or HTTP date).

    >>> parse_retry_after({"retry-after": "2"})
    2.0
    >>> parse_retry_after({"retry-after-ms": "1500"})
    1.5
    >>> parse_retry_after({"retry-after": "soon"}) is None
    True
    >>> parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0)
    10.0
    """
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class TokenBucket:
    """Allows ``per_minute`` units per minute on average, bursts up to one minute's worth.

    >>> t = [0.0]
    >>> b = TokenBucket(60, clock=lambda: t[0])
    >>> b.wait_time(60)
    0.0
    >>> b.take(60); b.wait_time(30)
    30.0
    >>> t[0] = 10.0; b.wait_time(30)
    20.0
    """

    def __init__(self, per_minute: float, clock=time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be > 0")
        self.rate_per_s = per_minute / 60.0
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self._clock = clock
        self._last = clock()
        self._lock: asyncio.Lock | None = None  # created inside the event loop

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._last) * self.rate_per_s)
        self._last = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` units are available (0 if now); takes nothing."""
        self._refill()
        need = min(amount, self.capacity) - self.level
        return 0.0 if need <= 0 else need / self.rate_per_s

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        """Correct an estimate afterwards (negative ``amount`` = used more than estimated)."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    async def acquire(self, amount: float) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # first come, first served
            while (wait := self.wait_time(amount)) > 0:
                await asyncio.sleep(wait)
            self.take(amount)

