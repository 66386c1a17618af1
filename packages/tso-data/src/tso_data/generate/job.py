"""The generation job: asking for the responses a plan owes (:mod:`tso_data.generate.plan`)
turn by turn, and handing them to the catalog through shards.

- Multi-turn prompts (MT-Bench) are answered turn by turn: turn t+1 is asked with the
  model's own answers to turns 1..t in context. Turns run in waves (all first turns of a
  chunk of conversations, then their second turns...); a conversation is written when
  its last turn is answered, so a crash loses at most the conversations in flight.
- A failed request becomes a ``failures`` row (never a response) and is planned again
  on the next run; its failure row is cleared once the response exists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pyarrow as pa
from rich.console import Console

from tso_data.catalog import Catalog
from tso_data.errors import CatalogLockedError
from tso_data.generate.backend import Backend, Request, Result
from tso_data.generate.plan import Conversation, GenerateSpec, Plan
from tso_data.generate.runner import RunSummary, run_requests
from tso_data.ids import content_hash
from tso_data.redact import redact
from tso_data.shards import merge_shards, write_shard

MULTI_TURN_CHUNK = 1024  # conversations per wave group: bounds what a crash can lose

RESPONSE_SCHEMA = pa.schema(
    [
        ("response_id", pa.string()),
        ("prompt_id", pa.string()),
        ("model", pa.string()),
        ("sample_index", pa.int32()),
        ("turns", pa.list_(pa.string())),
        ("sampling", pa.string()),
        ("backend", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("finish_reason", pa.string()),
        ("latency_s", pa.float64()),
        ("created_at", pa.timestamp("us")),
    ]
)
FAILURE_SCHEMA = pa.schema(
    [
        ("failure_id", pa.string()),
        ("task", pa.string()),
        ("model", pa.string()),
        ("prompt_id", pa.string()),
        ("error", pa.string()),
        ("attempts", pa.int32()),
        ("created_at", pa.timestamp("us")),
    ]
)



def request_seed(seed: int | None, response_id_: str, turn: int) -> int | None:
    """Each request's own seed, derived from the run's seed, so samples differ from each
    other but a rerun with the same seed asks the same thing.

    >>> request_seed(None, "abc", 0) is None
    True
    >>> request_seed(7, "abc", 0) == request_seed(7, "abc", 0) != request_seed(7, "abc", 1)
    True
    """
    if seed is None:
        return None
    return int(content_hash("seed", str(seed), response_id_, str(turn)), 16) % (2**31 - 1)



# -- running ---------------------------------------------------------------------------------


@dataclass
class GenerateResult:
    plan: Plan
    run: RunSummary
    responses_written: int = 0
    failures_written: int = 0
    merged_responses: int = 0
    merge_s: float = 0.0
    merge_pending: bool = False  # the catalog was locked at the end: shards merge next run


class _Writer:
    """Turns Results into response/failure rows and writes them as shards (on_flush)."""

    def __init__(self, catalog: Catalog, spec: GenerateSpec, backend_name: str,
                 conversations: dict[str, Conversation], turn: int) -> None:
        self.catalog = catalog
        self.spec = spec
        self.backend_name = backend_name
        self.conversations = conversations
        self.turn = turn
        self.failed: set[str] = set()
        self.responses = 0
        self.failures = 0

    def __call__(self, batch: list[Result]) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        finished: list[Conversation] = []
        failures: list[dict[str, object]] = []
        for result in batch:
            conv = self.conversations[result.key]
            if not result.ok:
                self.failed.add(conv.response_id)
                failures.append({
                    "failure_id": conv.response_id, "task": "generate", "model": self.spec.model,
                    "prompt_id": conv.prompt_id,
                    "error": redact(f"turn {self.turn + 1}/{len(conv.user_turns)}: {result.error or 'no text'}"),
                    "attempts": result.attempts, "created_at": now,
                })
                continue
            conv.answers.append(result.text or "")
            conv.prompt_tokens += result.prompt_tokens or 0
            conv.completion_tokens += result.completion_tokens or 0
            conv.latency_s += result.latency_s
            conv.finish_reasons.append(result.finish_reason or "stop")
            if len(conv.answers) == len(conv.user_turns):
                finished.append(conv)
        write_shard(self.catalog, "responses", self._responses_table(finished, now))
        write_shard(self.catalog, "failures", pa.Table.from_pylist(failures, schema=FAILURE_SCHEMA))
        self.responses += len(finished)
        self.failures += len(failures)

    def _responses_table(self, finished: list[Conversation], now: datetime) -> pa.Table:
        """Column by column (no dict per row): this runs in the process that also feeds the
        requests, and at thousands of responses a second its cost shows."""
        n = len(finished)
        columns = {
            "response_id": [c.response_id for c in finished],
            "prompt_id": [c.prompt_id for c in finished],
            "model": [self.spec.model] * n,
            "sample_index": [c.sample_index for c in finished],
            "turns": [c.answers for c in finished],
            "sampling": [self.spec.sampling_key] * n,
            "backend": [self.backend_name] * n,
            "prompt_tokens": [c.prompt_tokens for c in finished],
            "completion_tokens": [c.completion_tokens for c in finished],
            "finish_reason": ["length" if "length" in c.finish_reasons else c.finish_reasons[-1] for c in finished],
            "latency_s": [c.latency_s for c in finished],
            "created_at": [now] * n,
        }
        return pa.table([pa.array(columns[f.name], type=f.type) for f in RESPONSE_SCHEMA], schema=RESPONSE_SCHEMA)


def run_generation(
    catalog: Catalog,
    plan: Plan,
    backend: Backend,
    *,
    flush_every: int = 512,
    flush_seconds: float = 30.0,
    progress: bool = True,
    console: Console | None = None,
    merge: bool = True,
) -> GenerateResult:
    """Generate every conversation of ``plan`` and merge the shards into the catalog."""
    result = GenerateResult(plan, RunSummary())
    # pyarrow imports pandas on its first Python-to-Arrow conversion (~0.5 s): pay it
    # before the stream starts rather than inside the first flush.
    pa.Table.from_pylist([], schema=RESPONSE_SCHEMA)
    todo = plan.todo
    # Single-turn conversations stream in one pass; multi-turn ones go in chunks of waves.
    groups = [[c for c in todo if len(c.user_turns) == 1]]
    multi = [c for c in todo if len(c.user_turns) > 1]
    groups += [multi[i : i + MULTI_TURN_CHUNK] for i in range(0, len(multi), MULTI_TURN_CHUNK)]
    try:
        for group in filter(None, groups):
            _run_group(catalog, plan.spec, backend, group, result, flush_every, flush_seconds, progress, console)
    finally:
        if merge:
            clear = plan.pending_failures > 0 or result.failures_written > 0
            result.merged_responses, result.merge_s, result.merge_pending = merge_generated(catalog, clear)
    return result


def _run_group(catalog: Catalog, spec: GenerateSpec, backend: Backend, group: list[Conversation],
               result: GenerateResult, flush_every: int, flush_seconds: float, progress: bool,
               console: Console | None) -> None:
    by_id = {c.response_id: c for c in group}
    alive = list(group)
    n_turns = max(len(c.user_turns) for c in group)
    for turn in range(n_turns):
        wave = [c for c in alive if len(c.user_turns) > turn]
        if not wave:
            break
        requests = [
            Request(
                key=c.response_id,
                messages=c.messages_for_turn(turn),
                params=replace(spec.params, seed=request_seed(spec.params.seed, c.response_id, turn)),
                sample_index=c.sample_index,
            )
            for c in wave
        ]
        writer = _Writer(catalog, spec, backend.name, by_id, turn)
        label = "generating" if n_turns == 1 else f"turn {turn + 1}/{n_turns}"
        summary = run_requests(
            backend, requests, on_flush=writer, flush_every=flush_every, flush_seconds=flush_seconds,
            progress=progress, description=label, console=console,
        )
        result.run.add(summary)
        result.responses_written += writer.responses
        result.failures_written += writer.failures
        alive = [c for c in wave if c.response_id not in writer.failed]


def merge_generated(catalog: Catalog, clear_failures: bool = True, attempts: int = 3) -> tuple[int, float, bool]:
    """Merge pending response and failure shards; drop failures whose response now exists
    (``clear_failures=False`` skips that when the caller knows there are none).

    Returns (responses added, seconds, still pending because the catalog was locked).
    """
    import time

    started = time.monotonic()
    added = 0
    for attempt in range(attempts):
        try:
            added += merge_shards(catalog, "responses")
            if merge_shards(catalog, "failures", replace=True) == 0 and not clear_failures:
                return added, time.monotonic() - started, False
            resolved = "FROM failures WHERE task = 'generate' AND failure_id IN (SELECT response_id FROM responses)"
            if catalog.scalar(f"SELECT count(*) {resolved}"):  # no write (no lock) when none is
                with catalog.connect(read_only=False) as con:
                    con.execute(f"DELETE {resolved}")
            return added, time.monotonic() - started, False
        except CatalogLockedError:
            return added, time.monotonic() - started, True
        except Exception:  # noqa: BLE001 - a shard merged and removed by another worker meanwhile
            if attempt == attempts - 1:
                raise
    return added, time.monotonic() - started, False
