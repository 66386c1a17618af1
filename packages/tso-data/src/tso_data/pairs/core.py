"""The pure core of `tso-data build`: catalog frames + resolved configuration → pairs frame.

No I/O here. The steps, each in its own module: the answers a round may use
(:mod:`~tso_data.pairs.candidates`), matrix pairs (:mod:`~tso_data.pairs.matrix_pairs`) and
base pairs (:mod:`~tso_data.pairs.base_pairs`) drawn by counter-based randomness
(:mod:`~tso_data.pairs.sampling`), then the selection of ``round(N·mix)`` pairs per kind
(:mod:`~tso_data.pairs.selection`). Everything is vectorised (Polars, NumPy) on integer keys;
strings are gathered once at the end. :mod:`tso_data.pairs.reference` is the same
computation written per prompt for reading, and the tests check the two agree.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import duckdb
import polars as pl
import pyarrow as pa

from tso_data.ids import sql_hash
from tso_data.pairs.base_pairs import base_kind
from tso_data.pairs.candidates import Candidates, find_candidates
from tso_data.pairs.config import RoundConfig
from tso_data.pairs.matrix_pairs import matrix_kind
from tso_data.pairs.pools import ResolvedPools
from tso_data.pairs.selection import SIDE, Kind, draw_in_order, select_first, targets

PAIR_KEY_COLUMNS = [
    "pair_id", "prompt_id", "kind", "chosen_id", "rejected_id", "chosen_source", "rejected_source",
    "chosen_score", "rejected_score",
]
PAIRS_SCHEMA = {
    "pair_id": pl.String, "prompt_id": pl.String, "kind": pl.String, "chosen_id": pl.String, "rejected_id": pl.String,
    "chosen_source": pl.String, "rejected_source": pl.String, "chosen_score": pl.Float64, "rejected_score": pl.Float64,
    "chosen_turns": pl.List(pl.String), "rejected_turns": pl.List(pl.String),
}


@dataclass(frozen=True)
class BuildInputs:
    """Catalog tables as Polars frames (only the columns named are read).

    - ``prompts``: prompt_id, messages (list of {role, content}), n_turns, split
    - ``answers``: answer_id, prompt_id, source, turns
    - ``responses``: response_id, prompt_id, model, turns
    - ``scores``: target_id, score (one aggregated score per target, :mod:`tso_data.scoring`)
    """

    prompts: pl.DataFrame
    answers: pl.DataFrame
    responses: pl.DataFrame
    scores: pl.DataFrame


@dataclass
class BuildResult:
    pairs: pl.DataFrame  # PAIRS_SCHEMA; one row per pair, in selection order
    tau: float | None  # the global τ (None for per-prompt τ or when no base pairs are asked)
    requested: dict[str, int]
    available: dict[str, int]
    skipped: dict[str, int]  # reason -> number of prompts
    warnings: list[str] = field(default_factory=list)
    candidates: pl.DataFrame | None = None  # per-source answer counts and mean scores

    @property
    def counts(self) -> dict[str, int]:
        by_kind = dict(self.pairs.group_by("kind").len().iter_rows())
        return {"matrix": int(by_kind.get("matrix", 0)), "base": int(by_kind.get("base", 0))}


def round_sources(pools: ResolvedPools) -> list[str]:
    """Every source the round reads, sorted: a source's index in this list keys its draws.
    The base model's answers are always read: they give the score distances of the summary."""
    return sorted(set(pools.positive) | set(pools.negative) | {pools.base_model})


def build_pairs(inputs: BuildInputs, config: RoundConfig, pools: ResolvedPools) -> BuildResult:
    """The pairs of one round, with their texts (the conversations are the snapshot's)."""
    sources = round_sources(pools)
    candidates, skipped = find_candidates(inputs, config, sources, pools.base_model)
    warnings = list(pools.warnings)
    need = targets(config, {"matrix": 0, "base": 0}) if config.pairs is not None else None
    drawn, available, tau = _draw_kinds(candidates, pools, config, need, skipped)
    requested = need if need is not None else targets(config, available)
    chosen = [
        select_first(drawn[kind], requested[kind], candidates.prompt_keys).with_columns(kind=pl.lit(kind))
        for kind in drawn if drawn[kind].height
    ]
    for kind, n in requested.items():
        if available[kind] < n:
            warnings.append(
                f"fewer {kind} pairs than asked: {n} asked, only {available[kind]} possible "
                f"(built what is possible; see the skipped prompts in --dry-run)"
            )
    columns = ["kind", "prompt_code", *[f"{side}_{c}" for c in SIDE for side in ("chosen", "rejected")]]
    pairs = pl.concat([f.select(columns) for f in chosen], how="vertical_relaxed") if chosen else pl.DataFrame()
    # the source stats beside the texts, where a core is often idle (not beside the draws,
    # which keep both cores busy)
    with ThreadPoolExecutor(max_workers=1) as thread:
        stats_of = thread.submit(_source_stats, candidates)
        finished = _with_texts(pairs, candidates)
        stats = stats_of.result()
    present = set(stats["source"])
    for source in sources:
        if source not in present and (config.mix_base > 0 or source != pools.base_model):
            warnings.append(f"source {source!r} has no answers for the {config.split!r} prompts")
    return BuildResult(
        pairs=finished, tau=tau, requested=requested, available=available, skipped=skipped,
        warnings=warnings, candidates=stats,
    )


def _draw_kinds(
    candidates: Candidates, pools: ResolvedPools, config: RoundConfig, need: dict[str, int] | None,
    skipped: dict[str, int],
) -> tuple[dict[str, pl.DataFrame], dict[str, int], float | None]:
    """Draw each kind the mix asks for, in selection order: (drawn pairs, possible, τ).
    The two kinds share nothing but the candidates: they are drawn on two threads (Polars and
    NumPy release the GIL), each deterministic on its own."""
    def draw(kind: Kind) -> tuple[pl.DataFrame, int]:
        return draw_in_order(kind, need[kind.name] if need else None, config.seed)

    def draw_matrix() -> tuple[pl.DataFrame, int, dict[str, int]]:
        kind, kind_skipped = matrix_kind(candidates, pools, config)
        return (*draw(kind), kind_skipped)

    def draw_base() -> tuple[pl.DataFrame, int, dict[str, int], float | None]:
        kind, tau, kind_skipped = base_kind(candidates, pools, config)
        return (*draw(kind), kind_skipped, tau)

    drawn: dict[str, pl.DataFrame] = {}
    available = {"matrix": 0, "base": 0}
    tau: float | None = None
    with ThreadPoolExecutor(max_workers=3) as threads:
        matrix = threads.submit(draw_matrix) if config.mix_matrix > 0 else None
        base = threads.submit(draw_base) if config.mix_base > 0 else None
        # the answer ids' contiguous copy, which the pair ids need first, beside the draws
        threads.submit(lambda: candidates.target_ids)
        if matrix is not None:
            drawn["matrix"], available["matrix"], kind_skipped = matrix.result()
            skipped.update(kind_skipped)
        if base is not None:
            drawn["base"], available["base"], kind_skipped, tau = base.result()
            skipped.update(kind_skipped)
    return drawn, available, tau


def _source_stats(candidates: Candidates) -> pl.DataFrame:
    """Per source present: answers, scored answers and mean score (null if none scored)."""
    names = pl.Series(candidates.sources, dtype=pl.String)
    stats = candidates.rows.group_by("source_index").agg(
        answers=pl.len().cast(pl.UInt32), mean_score=pl.col("score").mean(),
        scored=pl.col("score").count().cast(pl.UInt32),
    )
    return stats.select("answers", "mean_score", "scored", source=names.gather(stats["source_index"])).sort("source")


def _with_texts(pairs: pl.DataFrame, candidates: Candidates) -> pl.DataFrame:
    """Strings at last: prompt ids, answer ids, sources and turns of chosen and rejected."""
    if pairs.height == 0:
        return pl.DataFrame(schema=PAIRS_SCHEMA)
    names = pl.Series(candidates.sources, dtype=pl.String)
    chosen_row, rejected_row = pairs["chosen_answer_row"], pairs["rejected_answer_row"]
    keys = pl.DataFrame({
        "kind": pairs["kind"],
        "prompt_id": candidates.prompt_ids.gather(pairs["prompt_code"]),  # a prompt's code is its row
        "chosen_id": candidates.target_ids.gather(chosen_row),
        "rejected_id": candidates.target_ids.gather(rejected_row),
    })
    # rows stay in selection order (matrix, then base pairs, each in its seeded order): a pure
    # function of content and seed. The texts are gathered beside the hashing (DuckDB hashes
    # on both cores, but the gathers are memory-bound).
    with ThreadPoolExecutor(max_workers=1) as thread:
        texts = thread.submit(lambda: (candidates.turns.gather(chosen_row), candidates.turns.gather(rejected_row)))
        pair_id = pair_ids(keys)
        chosen_turns, rejected_turns = texts.result()
    # chosen and rejected texts differ: checked when drawing
    return pl.DataFrame({
        "pair_id": pair_id,
        "prompt_id": keys["prompt_id"],
        "kind": pairs["kind"],
        "chosen_id": keys["chosen_id"],
        "rejected_id": keys["rejected_id"],
        "chosen_source": names.gather(pairs["chosen_source_index"]),
        "rejected_source": names.gather(pairs["rejected_source_index"]),
        "chosen_score": pairs["chosen_score"].cast(pl.Float64),
        "rejected_score": pairs["rejected_score"].cast(pl.Float64),
        "chosen_turns": chosen_turns,
        "rejected_turns": rejected_turns,
    })


def pair_ids(keys: pl.DataFrame) -> pl.Series:
    """pair_id = content hash of (kind, prompt id, chosen answer id, rejected answer id),
    computed inside DuckDB (both cores) with the same function as :mod:`tso_data.ids`.

    >>> from tso_data.ids import content_hash
    >>> keys = pl.DataFrame({"kind": ["base"], "prompt_id": ["p"], "chosen_id": ["c"], "rejected_id": ["r"]})
    >>> pair_ids(keys).item() == content_hash("pair", "base", "p", "c", "r")
    True
    """
    expr = sql_hash("pair", "kind", "prompt_id", "chosen_id", "rejected_id")
    table = keys.select("kind", "prompt_id", "chosen_id", "rejected_id").to_arrow(compat_level=pl.CompatLevel.newest())
    # batches DuckDB can hash on both cores (a one-batch table is scanned by one thread)
    frame = pa.Table.from_batches(table.to_batches(max_chunksize=1 << 16), schema=table.schema)  # noqa: F841
    with duckdb.connect() as con:  # a private in-memory connection: safe on any thread
        return con.sql(f"SELECT {expr} AS pair_id FROM frame").pl().get_column("pair_id")
