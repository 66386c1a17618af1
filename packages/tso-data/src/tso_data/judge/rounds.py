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
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

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
        this_round = _Round(pending, final, record, write, max_attempts)
        requests = [request_of(item) for item in pending.values()]
        description = label + (f" (retry round {round_number - 1})" if round_number > 1 else "")
        run_requests(backend, requests, on_flush=this_round.on_flush, flush_every=flush_every,
                     flush_seconds=flush_seconds, progress=progress, description=description)
        this_round.record_dropped()
        pending = this_round.retry
    return final


@dataclass
class _Round(Generic[Item]):
    """One round's bookkeeping: every reply recorded (its status set in ``final``) and the items
    to ask again (not ``ok``, attempts left) collected in ``retry``."""

    pending: dict[str, Item]
    final: dict[str, str]
    record: Callable[[Item, Result | None], tuple[Row, str]]
    write: Callable[[list[Row]], None]
    max_attempts: int
    retry: dict[str, Item] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)

    def keep(self, key: str, result: Result | None, rows: list[Row]) -> None:
        item = self.pending[key]
        row, self.final[key] = self.record(item, result)
        rows.append(row)
        if self.final[key] != "ok" and item.attempts < self.max_attempts:
            self.retry[key] = item

    def on_flush(self, results: list[Result]) -> None:
        rows: list[Row] = []
        for result in results:
            self.answered.add(result.key)
            self.keep(result.key, result, rows)
        if rows:
            self.write(rows)

    def record_dropped(self) -> None:
        """A request the backend dropped (no result came back) is an error."""
        for key in set(self.pending) - self.answered:
            rows: list[Row] = []
            self.keep(key, None, rows)
            self.write(rows)
