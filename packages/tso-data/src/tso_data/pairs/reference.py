"""The pairs of one round computed prompt by prompt in plain Python, written for reading, not
speed: the definition :func:`tso_data.pairs.core.build_pairs` is tested against (it must
return exactly these pairs, in this order). Semantics: docs/design.md, "1. The method"."""

from __future__ import annotations

import math
from collections import defaultdict
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


def reference_pairs(inputs: BuildInputs, config: RoundConfig, pools: ResolvedPools) -> list[dict]:
    """The pairs, as rows with the columns of ``build_pairs(...).pairs``, in its order."""
    sources, seed, cap = round_sources(pools), config.seed, config.max_pairs_per_prompt
    prompts = {}  # prompt_id -> n_turns, the first row of each prompt of the round's split
    for row in inputs.prompts.filter(inputs.prompts["split"] == config.split).iter_rows(named=True):
        prompts.setdefault(row["prompt_id"], row["n_turns"])
    scores = dict(inputs.scores.select("target_id", "score").iter_rows())
    answers = defaultdict(list)  # prompt_id -> the answers a round may use
    texts = [inputs.answers.rename({"answer_id": "id"}), inputs.responses.rename({"response_id": "id", "model": "source"})]
    for row in (row for frame in texts for row in frame.iter_rows(named=True)):
        if row["source"] in sources and len(row["turns"]) == prompts.get(row["prompt_id"]):
            answers[row["prompt_id"]].append(Answer(row["id"], row["source"], row["turns"], scores.get(row["id"])))

    def key(text_id: str) -> int:
        return int(text_id, 16)

    def weighted_draw(pool: dict[str, float], candidates: list[Answer], prompt: str, d: int, streams) -> Answer | None:
        present = {a.source for a in candidates if a.source in pool}
        if not present:
            return None
        race = {s: -math.log1p(-uniform(seed, streams[0], key(prompt), d, sources.index(s))) / pool[s] for s in present}
        winner = min(present, key=race.__getitem__)
        mine = [a for a in candidates if a.source == winner]
        return min(mine, key=lambda a: uniform(seed, streams[1], key(prompt), d, key(a.id)))

    draws: dict[str, list] = {"matrix": [], "base": []}  # (d, priority, prompt key, prompt, chosen, rejected)
    for prompt in prompts if config.mix_matrix > 0 else []:
        for d in range(cap):
            chosen = weighted_draw(pools.positive, answers[prompt], prompt, d, (Stream.POSITIVE_SOURCE, Stream.POSITIVE_ANSWER))
            differing = [a for a in answers[prompt] if chosen is not None and a.turns != chosen.turns]
            rejected = weighted_draw(pools.negative, differing, prompt, d, (Stream.NEGATIVE_SOURCE, Stream.NEGATIVE_ANSWER))
            if rejected is not None:
                draws["matrix"].append((d, uniform(seed, Stream.ORDER_MATRIX, key(prompt), d), key(prompt), prompt, chosen, rejected))
    base = {p: [a for a in answers[p] if a.source == pools.base_model and a.score is not None] for p in prompts}
    every_score = [a.score for p in prompts for a in base[p]]
    for prompt in prompts if config.mix_base > 0 else []:
        if not base[prompt]:
            continue
        if config.tau_mode == "fixed":
            tau = config.tau_value
        elif config.tau_mode == "global-mean":
            tau = sum(every_score) / len(every_score)
        else:
            tau = sum(a.score for a in base[prompt]) / len(base[prompt])
        tie = {a.id: uniform(seed, Stream.BASE_TIE, key(a.id)) for a in base[prompt]}
        best_first = sorted((a for a in base[prompt] if a.score > tau), key=lambda a: (-a.score, tie[a.id]))
        worst_first = sorted((a for a in base[prompt] if a.score <= tau), key=lambda a: (a.score, tie[a.id]))
        if not best_first or not worst_first:
            continue
        for d in range(min(len(best_first), len(worst_first), cap) if config.pairing == "best-worst" else cap):
            if config.pairing == "best-worst":
                chosen, rejected = best_first[d], worst_first[d]
            else:
                chosen = min(best_first, key=lambda a: uniform(seed, Stream.BASE_POSITIVE, key(prompt), d, key(a.id)))
                rejected = min(worst_first, key=lambda a: uniform(seed, Stream.BASE_NEGATIVE, key(prompt), d, key(a.id)))
            if chosen.turns != rejected.turns:
                draws["base"].append((d, uniform(seed, Stream.ORDER_BASE, key(prompt), d), key(prompt), prompt, chosen, rejected))
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
