"""The pairs of one round computed prompt by prompt in plain Python, written for reading, not
speed: the definition :func:`tso_data.pairs.core.build_pairs` is tested against (it must
return exactly these pairs, in this order). Semantics: docs/design.md, "1. The method"."""

from __future__ import annotations

import math
from typing import NamedTuple

from tso_data.ids import content_hash
from tso_data.pairs.config import RoundConfig
from tso_data.pairs.core import BuildInputs, round_sources
from tso_data.pairs.pools import ResolvedPools
from tso_data.pairs.sampling import Stream
from tso_data.pairs.selection import targets


class Answer(NamedTuple):
    id: str
    source: str
    turns: list[str]
    score: float | None


def uniform(seed: int, stream: int, *keys: int) -> float:
    """SplitMix64 over (seed, stream, keys), as :func:`tso_data.pairs.sampling.uniform`."""
    def splitmix(x: int) -> int:
        x = (x + 0x9E3779B97F4A7C15) % 2**64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
        return x ^ (x >> 31)

    hashed = splitmix((seed * 1_000_003 + stream) % 2**64)
    for key in keys:
        hashed = splitmix(hashed ^ key)
    return (hashed >> 11) / 2**53


def key(text_id: str) -> int:
    """The integer key of a content-hash id (16 hex digits)."""
    return int(text_id, 16)


def uniform_pick(answers: list[Answer], seed: int, stream: int, prompt: str, d: int) -> Answer:
    """One of ``answers``, uniformly: the one with the smallest uniform keyed on its id."""
    return min(answers, key=lambda a: uniform(seed, stream, key(prompt), d, key(a.id)))


def weighted_draw(pool: dict[str, float], answers: list[Answer], sources: list[str], seed: int,
                  streams: tuple[int, int], prompt: str, d: int) -> Answer | None:
    """A source by weight among the pool's sources in ``answers`` (an exponential race keyed on
    the source's index in ``sources``), then one of its answers uniformly."""
    present = {a.source for a in answers if a.source in pool}
    if not present:
        return None
    race = {s: -math.log1p(-uniform(seed, streams[0], key(prompt), d, sources.index(s))) / pool[s] for s in present}
    winner = min(present, key=race.__getitem__)
    return uniform_pick([a for a in answers if a.source == winner], seed, streams[1], prompt, d)


def reference_pairs(inputs: BuildInputs, config: RoundConfig, pools: ResolvedPools) -> list[dict]:
    """The pairs, as rows with the columns of ``build_pairs(...).pairs``, in its order."""
    sources, seed, cap = round_sources(pools), config.seed, config.max_pairs_per_prompt
    answers = _answers_of_round(inputs, config, sources)
    draws: dict[str, list] = {"matrix": [], "base": []}  # (d, priority, prompt key, prompt, chosen, rejected)
    for prompt in answers if config.mix_matrix > 0 else []:
        for d in range(cap):
            streams = (Stream.POSITIVE_SOURCE, Stream.POSITIVE_ANSWER)
            chosen = weighted_draw(pools.positive, answers[prompt], sources, seed, streams, prompt, d)
            differing = [a for a in answers[prompt] if chosen is not None and a.turns != chosen.turns]
            streams = (Stream.NEGATIVE_SOURCE, Stream.NEGATIVE_ANSWER)
            rejected = weighted_draw(pools.negative, differing, sources, seed, streams, prompt, d)
            if chosen is not None and rejected is not None:
                priority = uniform(seed, Stream.ORDER_MATRIX, key(prompt), d)
                draws["matrix"].append((d, priority, key(prompt), prompt, chosen, rejected))
    base = {p: [a for a in answers[p] if a.source == pools.base_model and a.score is not None] for p in answers}
    every_score = [a.score for p in answers for a in base[p]]
    for prompt in answers if config.mix_base > 0 else []:
        if not base[prompt]:
            continue
        if config.tau_mode == "fixed":
            tau = config.tau_value
        elif config.tau_mode == "global-mean":
            tau = sum(every_score) / len(every_score)
        else:
            tau = sum(a.score for a in base[prompt]) / len(base[prompt])
        for d, chosen, rejected in _base_draws(base[prompt], tau, config, prompt):
            priority = uniform(seed, Stream.ORDER_BASE, key(prompt), d)
            draws["base"].append((d, priority, key(prompt), prompt, chosen, rejected))
    kept: dict[str, list] = {"matrix": [], "base": []}  # per kind, in selection order, each pair once per prompt
    for kind, drawn in draws.items():
        for _, _, _, prompt, chosen, rejected in sorted(drawn, key=lambda draw: draw[:3]):
            if (prompt, chosen, rejected) not in kept[kind]:
                kept[kind].append((prompt, chosen, rejected))
    wanted = targets(config, {kind: len(pairs) for kind, pairs in kept.items()})
    return [
        {"pair_id": content_hash("pair", kind, p, c.id, r.id), "prompt_id": p, "kind": kind, "chosen_id": c.id,
         "rejected_id": r.id, "chosen_source": c.source, "rejected_source": r.source, "chosen_score": c.score,
         "rejected_score": r.score, "chosen_turns": c.turns, "rejected_turns": r.turns}
        for kind in ("matrix", "base") for p, c, r in kept[kind][: wanted[kind]]
    ]


def _answers_of_round(inputs: BuildInputs, config: RoundConfig, sources: list[str]) -> dict[str, list[Answer]]:
    """Per prompt of the round's split (first row of each, in order): the answers of ``sources``
    with as many turns as the prompt asks, with their scores."""
    answers: dict[str, list[Answer]] = {}
    n_turns: dict[str, int] = {}
    for row in inputs.prompts.filter(inputs.prompts["split"] == config.split).iter_rows(named=True):
        answers.setdefault(row["prompt_id"], [])
        n_turns.setdefault(row["prompt_id"], row["n_turns"])
    scores = dict(inputs.scores.select("target_id", "score").iter_rows())
    texts = [inputs.answers.rename({"answer_id": "id"}),
             inputs.responses.rename({"response_id": "id", "model": "source"})]
    for row in (row for frame in texts for row in frame.iter_rows(named=True)):
        if row["source"] in sources and len(row["turns"]) == n_turns.get(row["prompt_id"]):
            answers[row["prompt_id"]].append(Answer(row["id"], row["source"], row["turns"], scores.get(row["id"])))
    return answers


def _base_draws(base: list[Answer], tau: float, config: RoundConfig, prompt: str) -> list[tuple[int, Answer, Answer]]:
    """A prompt's base pairs (d, chosen, rejected): above τ against at or below τ, by rank or at random."""
    tie = {a.id: uniform(config.seed, Stream.BASE_TIE, key(a.id)) for a in base}
    best_first = sorted((a for a in base if a.score > tau), key=lambda a: (-a.score, tie[a.id]))
    worst_first = sorted((a for a in base if a.score <= tau), key=lambda a: (a.score, tie[a.id]))
    if not best_first or not worst_first:
        return []
    if config.pairing == "best-worst":
        pairs = list(zip(best_first, worst_first))[: config.max_pairs_per_prompt]
    else:
        pairs = [(uniform_pick(best_first, config.seed, Stream.BASE_POSITIVE, prompt, d),
                  uniform_pick(worst_first, config.seed, Stream.BASE_NEGATIVE, prompt, d))
                 for d in range(config.max_pairs_per_prompt)]
    return [(d, chosen, rejected) for d, (chosen, rejected) in enumerate(pairs) if chosen.turns != rejected.turns]
