"""When a whole run failed: `generate` and `judge` then exit non-zero with one line.

A run whose every request failed (a wrong API key, a wrong model name, an endpoint that
answers 4xx) used to end with exit 0 and a table; a script chaining the steps went on as
if the answers existed. :func:`all_failed` names such a run, and authentication errors
first: no retry will fix those.
"""

from __future__ import annotations

from collections.abc import Mapping

_AUTH_MARKERS = ("HTTP 401", "HTTP 403", "authentication", "Incorrect API key", "invalid_api_key")


def all_failed(requests: int, ok: int, errors: Mapping[str, int]) -> str | None:
    """A one-line reason when every request of a run failed, or every failure was an
    authentication error; None for a run with any success (and no authentication error).

    >>> all_failed(3, 0, {"HTTP 500": 3})
    'every request failed (3 of 3; e.g. HTTP 500)'
    >>> all_failed(4, 0, {"HTTP 401: Incorrect API key provided: [REDACTED]": 4})  # doctest: +NORMALIZE_WHITESPACE
    'authentication failed for 4 of 4 requests (HTTP 401: Incorrect API key provided: [REDACTED]): check
    the API key (--api-key-env)'
    >>> all_failed(5, 4, {"HTTP 500": 1}) is None
    True
    """
    failed = sum(errors.values())
    if requests == 0 or failed == 0:
        return None
    auth = {e: n for e, n in errors.items() if any(m.lower() in e.lower() for m in _AUTH_MARKERS)}
    if auth and sum(auth.values()) == failed:
        example = max(auth, key=lambda e: auth[e])
        return (f"authentication failed for {failed} of {requests} requests ({example}): "
                "check the API key (--api-key-env)")
    if ok > 0:
        return None
    example = max(errors, key=lambda e: errors[e])
    return f"every request failed ({failed} of {requests}; e.g. {example})"
