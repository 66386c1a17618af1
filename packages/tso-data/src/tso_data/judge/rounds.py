"""Asking a judge model in rounds, the loop that pointwise judging (:mod:`tso_data.judge.run`)
and pairwise verdicts (:mod:`tso_data.eval.judging`) share.

Each round sends every pending item once through the request loop of `tso-data generate`
(:func:`tso_data.generate.runner.run_requests`: the backend's concurrency, rate limits,
periodic flushes, progress). Each reply is recorded as a row with a status; an item whose
status is not ``ok`` is asked again in the next round (a new request, so a new seed) until it
has used ``max_attempts`` attempts. A request the backend dropped is recorded as an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from tso_data.generate.backend import Backend, Request, Result
from tso_data.generate.runner import run_requests

Row = dict[str, object]


class Attempted(Protocol):
    attempts: int  # attempts used so far, earlier runs included


Item = TypeVar("Item", bound=Attempted)


def ask_in_rounds(
    backend: Backend,
    items: dict[str, Item],
    *,
    request_of: Callable[[Item], Request],
    record: Callable[[Item, Result | None], tuple[Row, str]],
    write: Callable[[list[Row]], None],
    max_attempts: int,
    label: str,
    progress: bool = True,
    flush_every: int = 256,
    flush_seconds: float = 30.0,
) -> dict[str, str]:
    """Ask for every item (keyed by its request key) until ``ok`` or out of attempts.

    ``record(item, result)`` counts the attempt and returns the item's row and status
    (``result`` None: the backend returned nothing for it); ``write`` stores a flush's rows.
    Returns each item's last status."""
    pending = dict(items)
    final: dict[str, str] = {}
    round_number = 0
    while pending:
        round_number += 1
        description = label + (f" (retry round {round_number - 1})" if round_number > 1 else "")
        pending = _ask_once(backend, pending, final, request_of=request_of, record=record, write=write,
                            max_attempts=max_attempts, description=description, progress=progress,
                            flush_every=flush_every, flush_seconds=flush_seconds)
    return final


def _ask_once(
    backend: Backend,
    pending: dict[str, Item],
    final: dict[str, str],
    *,
    request_of: Callable[[Item], Request],
    record: Callable[[Item, Result | None], tuple[Row, str]],
    write: Callable[[list[Row]], None],
    max_attempts: int,
    description: str,
    progress: bool,
    flush_every: int,
    flush_seconds: float,
) -> dict[str, Item]:
    """One round: every pending item asked once, each status set in ``final``; returns the items
    to ask again (not ``ok``, attempts left)."""
    retry: dict[str, Item] = {}
    answered: set[str] = set()

    def keep(key: str, item: Item, result: Result | None, rows: list[Row]) -> None:
        row, final[key] = record(item, result)
        rows.append(row)
        if final[key] != "ok" and item.attempts < max_attempts:
            retry[key] = item

    def on_flush(results: list[Result]) -> None:
        rows: list[Row] = []
        for result in results:
            answered.add(result.key)
            keep(result.key, pending[result.key], result, rows)
        if rows:
            write(rows)

    requests = [request_of(item) for item in pending.values()]
    run_requests(backend, requests, on_flush=on_flush, flush_every=flush_every, flush_seconds=flush_seconds,
                 progress=progress, description=description)
    for key in set(pending) - answered:  # a backend that dropped a request: an error
        rows: list[Row] = []
        keep(key, pending[key], None, rows)
        write(rows)
    return retry
