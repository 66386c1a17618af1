"""Planning a generation job: which responses a model still owes, and what it is asked.

- A response's id hashes (prompt, model, sampling parameters, sample index): a rerun
  plans only ids that are neither in ``responses`` nor in a pending shard.
- Workers split the prompts by a hash of their id (``--shard i/N``), so every worker
  agrees without talking to the others.
- A multi-turn prompt becomes one :class:`Conversation`: the context, the user turns still
  to answer, and the answers so far (:mod:`tso_data.generate.job` runs them).

See docs/design.md, 3. The catalog, and 5. Scale-out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.generate.backend import SamplingParams
from tso_data.ids import canonical_json, content_hash, response_id
from tso_data.shards import pending_shards
from tso_data.sql_guard import check_filter

SPLITS = ("train", "heldout", "all")


# -- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateSpec:
    model: str
    params: SamplingParams = SamplingParams()
    n: int = 1
    where: str | None = None
    split: str = "all"
    shard: tuple[int, int] = (0, 1)

    @property
    def sampling_key(self) -> str:
        return canonical_json(self.params.as_dict())


def validate_sampling(params: SamplingParams, n: int) -> None:
    """Reject parameters no backend can honour, with the option's name.

    >>> validate_sampling(SamplingParams(top_p=0.0), 1)
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: --top-p must be in (0, 1], got 0.0
    """
    if params.temperature < 0:
        raise TSODataError(f"--temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise TSODataError(f"--top-p must be in (0, 1], got {params.top_p}")
    if params.max_tokens < 1:
        raise TSODataError(f"--max-tokens must be >= 1, got {params.max_tokens}")
    if n < 1:
        raise TSODataError(f"--n must be >= 1, got {n}")


def parse_shard(text: str) -> tuple[int, int]:
    """``i/N`` with 0 <= i < N.

    >>> parse_shard("2/4")
    (2, 4)
    >>> parse_shard("4/4")
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: --shard '4/4': expected i/N with 0 <= i < N (e.g. 0/4 ... 3/4)
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise TSODataError(f"--shard {text!r}: expected i/N with 0 <= i < N (e.g. 0/4 ... 3/4)")
    return int(m.group(1)), int(m.group(2))


def shard_of(prompt_id: str, n_shards: int) -> int:
    """The shard a prompt belongs to: a hash of its id, so every worker agrees.

    >>> shard_of("eb53908497de1ce2", 1)
    0
    >>> sorted({shard_of(f"p{i}", 3) for i in range(30)})
    [0, 1, 2]
    """
    return int(content_hash("shard", prompt_id), 16) % n_shards



# -- planning --------------------------------------------------------------------------------


@dataclass
class Conversation:
    """One response to produce: the context before the unanswered user turns, those
    turns, and the model's answers so far."""

    response_id: str
    prompt_id: str
    sample_index: int
    context: list[dict[str, str]]
    user_turns: list[dict[str, str]]
    answers: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reasons: list[str] = field(default_factory=list)

    def messages_for_turn(self, turn: int) -> list[dict[str, str]]:
        messages = list(self.context)
        for k in range(turn):
            messages.append(self.user_turns[k])
            messages.append({"role": "assistant", "content": self.answers[k]})
        messages.append(self.user_turns[turn])
        return messages


def split_turns(messages: Sequence[dict[str, str]], n_turns: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(context, user turns to answer): the last ``n_turns`` messages when they are all
    user turns (fewer if the trailing run of user messages is shorter).

    >>> msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
    ...         {"role": "user", "content": "b"}]
    >>> ctx, turns = split_turns(msgs, 2)
    >>> [m["content"] for m in ctx], [m["content"] for m in turns]
    (['s'], ['a', 'b'])
    """
    trailing = 0
    for m in reversed(messages):
        if m["role"] != "user":
            break
        trailing += 1
    k = max(1, min(n_turns, trailing))
    return [dict(m) for m in messages[:-k]], [dict(m) for m in messages[-k:]]


@dataclass
class Plan:
    spec: GenerateSpec
    selected_prompts: int
    in_shard_prompts: int
    already_done: int
    todo: list[Conversation]
    pending_failures: int = 0  # failure rows of this model from earlier runs (retried now)


def _prompt_filter(spec: GenerateSpec) -> str:
    if spec.split not in SPLITS:
        raise TSODataError(f"--split {spec.split!r}: choose one of {', '.join(SPLITS)}")
    clauses = []
    if spec.split != "all":
        clauses.append(f"split = '{spec.split}'")
    if spec.where:
        check_filter("--where", spec.where)
        clauses.append(f"({spec.where})")
    return " AND ".join(clauses) or "TRUE"


def plan_generation(catalog: Catalog, spec: GenerateSpec) -> Plan:
    """The conversations still owed for ``spec`` (nothing is generated here)."""
    validate_sampling(spec.params, spec.n)
    where = _prompt_filter(spec)
    try:
        prompts = catalog.arrow(
            f"SELECT prompt_id, messages, n_turns FROM prompts WHERE {where} ORDER BY prompt_id"
        ).to_pylist()
    except TSODataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's SQL filter; report it as such
        raise TSODataError(f"--where {spec.where!r}: {str(exc).splitlines()[0]}") from None
    if not prompts:
        raise TSODataError(
            f"no prompts match (split={spec.split}"
            + (f", where={spec.where}" if spec.where else "")
            + f") in {catalog.root}; ingest prompts first or widen the filter"
        )
    shard_index, n_shards = spec.shard
    mine = [p for p in prompts if shard_of(p["prompt_id"], n_shards) == shard_index]
    done = existing_response_ids(catalog, spec.model, spec.sampling_key)
    todo: list[Conversation] = []
    skipped = 0
    for prompt in mine:
        context, user_turns = split_turns(prompt["messages"], int(prompt["n_turns"]))
        for sample_index in range(spec.n):
            rid = response_id(prompt["prompt_id"], spec.model, spec.sampling_key, sample_index)
            if rid in done:
                skipped += 1
                continue
            todo.append(Conversation(rid, prompt["prompt_id"], sample_index, context, user_turns))
    failures = catalog.scalar("SELECT count(*) FROM failures WHERE task = 'generate' AND model = ?", [spec.model])
    return Plan(spec, len(prompts), len(mine), skipped, todo, int(failures or 0))


def existing_response_ids(catalog: Catalog, model: str, sampling_key: str) -> set[str]:
    """Ids of ``model``'s responses with these sampling parameters, in ``responses`` or in
    a pending shard (written by a killed run or another worker)."""
    ids = set(catalog.arrow("SELECT response_id FROM responses WHERE model = ? AND sampling = ?",
                            [model, sampling_key]).column(0).to_pylist())
    for path in pending_shards(catalog, "responses"):
        try:
            table = pq.read_table(path, columns=["response_id", "model"])
        except (FileNotFoundError, OSError):
            continue  # merged and removed by another worker meanwhile
        ids.update(rid for rid, m in zip(table.column(0).to_pylist(), table.column(1).to_pylist()) if m == model)
    return ids
