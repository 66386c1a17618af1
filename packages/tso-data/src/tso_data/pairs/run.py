"""The thin layer around the pure core: read the catalog, build, write and record the
snapshot, and compute the summary the CLI prints."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.ids import canonical_json
from tso_data.matrix import version_key
from tso_data.pairs.config import RoundConfig
from tso_data.pairs.core import BuildInputs, BuildResult, build_pairs, round_sources
from tso_data.pairs.pools import ResolvedPools, resolve_pools
from tso_data.pairs.snapshot import SCHEMA_VERSION, write_snapshot
from tso_data.scoring import aggregate_scores

LENGTH_IMBALANCE = 2.0  # warn when mean chosen length / mean rejected length leaves [1/x, x]


@dataclass
class RoundBuild:
    config: RoundConfig
    pools: ResolvedPools
    result: BuildResult
    inputs_fingerprint: dict[str, Any]
    snapshot_id: str | None = None
    path: Path | None = None
    created: bool = False
    lengths: dict[str, float] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)
    tau_problem: str | None = None  # τ is why no base pair could be built


def load_models(catalog: Catalog) -> pl.DataFrame:
    return pl.from_arrow(  # type: ignore[return-value]
        catalog.arrow("SELECT name, kind, family, version, version_order, size_b FROM models")
    )


def load_inputs(
    catalog: Catalog, config: RoundConfig, sources: list[str]
) -> tuple[BuildInputs, dict[str, int], dict[str, Any]]:
    """Read what the build needs as Polars frames: the split's prompts, the answers and
    responses of ``sources`` only, the judgments; plus answer counts per source (for the
    plan) and the input fingerprints."""
    with catalog.connect(read_only=True) as con:
        def frame(sql: str, params: list[object] | None = None) -> pl.DataFrame:
            return pl.from_arrow(con.sql(sql, params=params).to_arrow_table())  # type: ignore[return-value]

        prompts = frame("SELECT prompt_id, messages, n_turns, split FROM prompts WHERE split = ?", [config.split])
        if prompts.height == 0:
            raise unknown_split(con, config.split, "split in round.toml or --split")
        answers = frame("SELECT answer_id, prompt_id, source, turns FROM answers WHERE list_contains(?, source)",
                        [sources])
        responses = frame("SELECT response_id, prompt_id, model, turns FROM responses WHERE list_contains(?, model)",
                          [sources])
        counts = dict(con.sql(
            "SELECT model, count(*) FROM responses GROUP BY model UNION ALL "
            "SELECT source, count(*) FROM answers GROUP BY source"
        ).fetchall())
        judgments = frame(
            "SELECT judgment_id, target_id, judge, rubric, status, score FROM judgments"
        )
    if judgments.height:
        scores = aggregate_scores(judgments, judge=config.judge, rubric_weights=config.rubric_weights or None)
        used = judgments.filter(pl.col("status") == "ok")
        if config.judge is not None:
            used = used.filter(pl.col("judge") == config.judge)
    else:
        scores = pl.DataFrame(schema={"target_id": pl.String, "score": pl.Float64, "n_judgments": pl.Int64})
        used = judgments
    fingerprint = {
        "prompts": fingerprint_ids(prompts["prompt_id"]),
        "answers": fingerprint_ids(answers["answer_id"]),
        "responses": fingerprint_ids(responses["response_id"]),
        "judgments_used": fingerprint_ids(used["judgment_id"]),
    }
    inputs = BuildInputs(prompts=prompts, answers=answers, responses=responses, scores=scores)
    return inputs, {str(k): int(v) for k, v in counts.items()}, fingerprint


def unknown_split(con: object, split: str, how: str) -> TSODataError:
    """The error for a split no prompt has, listing the splits there are."""
    splits = [r[0] for r in con.execute("SELECT DISTINCT split FROM prompts ORDER BY 1").fetchall()]  # type: ignore[attr-defined]
    there = ", ".join(repr(s) for s in splits) if splits else "none: ingest prompts first"
    return TSODataError(f"split {split!r} is unknown: no prompt has it (the catalog's splits: {there}); set the {how}")


def fingerprint_ids(ids: pl.Series) -> str:
    """Order-independent fingerprint of a set of ids: count, xor and wrapping sum of their
    60-bit prefixes (cheap over tens of millions of ids).

    >>> fingerprint_ids(pl.Series(["00000000000000a1", "00000000000000b2"]))
    '2:1:15'
    >>> fingerprint_ids(pl.Series(["00000000000000b2", "00000000000000a1"]))
    '2:1:15'
    """
    keys = (
        pl.DataFrame({"i": ids.cast(pl.String)})
        .select(
            pl.col("i").str.slice(0, 15).str.to_integer(base=16, dtype=pl.UInt64, strict=False)
            .fill_null(pl.col("i").hash(seed=3))
        )
        .to_series()
        .to_numpy()
        .astype(np.uint64)
    )
    if keys.size == 0:
        return "0:0:0"
    with np.errstate(over="ignore"):
        x = int(np.bitwise_xor.reduce(keys))
        s = int(keys.sum(dtype=np.uint64))
    return f"{keys.size}:{x:x}:{s:x}"


def plan_round(catalog: Catalog, config: RoundConfig) -> RoundBuild:
    models = load_models(catalog)
    pools = resolve_pools(config, models)
    sources = round_sources(pools)
    inputs, counts, fingerprint = load_inputs(catalog, config, sources)
    fingerprint["models"] = fingerprint_ids(models["name"])
    result = build_pairs(inputs, config, pools)
    build = RoundBuild(config=config, pools=pools, result=result, inputs_fingerprint=fingerprint)
    result.warnings[:0] = list(config.notes)
    build.tau_problem = tau_problem(config, result)
    if build.tau_problem:
        result.warnings.append(build.tau_problem)
    build.cells = matrix_cells(models, counts, pools)
    build.lengths = length_stats(result.pairs)
    c, r = build.lengths.get("chosen_chars", 0.0), build.lengths.get("rejected_chars", 0.0)
    if c and r and not (1 / LENGTH_IMBALANCE <= c / r <= LENGTH_IMBALANCE):
        result.warnings.append(
            f"length imbalance: chosen answers average {c:.0f} characters, rejected {r:.0f} "
            "(a model may learn length instead of quality)"
        )
    return build


def tau_problem(config: RoundConfig, result: BuildResult) -> str | None:
    """When τ itself leaves no base pair (every scored base answer on one side of it),
    say so with τ's value, instead of only "no pair could be built"."""
    if config.mix_base <= 0 or result.available["base"] > 0 or result.tau is None:
        return None
    none_above = result.skipped.get("base: no answer above τ", 0)
    none_below = result.skipped.get("base: no answer at or below τ", 0)
    if none_above and not none_below:
        side = "at or below it: no base answer is a positive"
    elif none_below and not none_above:
        side = "above it: no base answer is a negative"
    else:
        return None
    return (f"τ = {result.tau:g} ({config.tau_mode}) has every scored base answer {side}; "
            "set τ within the range of the judge's scores (tau.value / --tau)")


def matrix_cells(models: pl.DataFrame, counts: dict[str, int], pools: ResolvedPools) -> list[dict[str, Any]]:
    """Every cell of the base model's family (and every pool source) with its role and
    number of answers in the catalog: the pool membership the dry-run shows."""
    rows = []
    def order(m: dict[str, Any]) -> tuple[object, ...]:
        key = version_key(m["version"], m["version_order"])
        return (m["family"] is None, m["family"] or "", m["size_b"] is None, m["size_b"] or 0, key is None, key or (),
                m["name"])

    for m in sorted(models.to_dicts(), key=order):
        name = m["name"]
        in_family = m["kind"] == "model" and m["family"] == pools.base_family and pools.base_family is not None
        if not (in_family or name in pools.positive or name in pools.negative):
            continue
        if name == pools.base_model:
            role = "base"
        elif name in pools.positive:
            role = f"positive ({pools.positive[name]:.3f})"
        elif name in pools.negative:
            role = f"negative ({pools.negative[name]:.3f})"
        else:
            role = "not in a pool"
        rows.append({"source": name, "family": m["family"], "version": m["version"], "size_b": m["size_b"],
                     "role": role, "responses": int(counts.get(name, 0))})
    return rows


def length_stats(pairs: pl.DataFrame) -> dict[str, float]:
    if pairs.height == 0:
        return {}
    chars = pairs.select(
        pl.col("chosen_turns").list.eval(pl.element().str.len_chars()).list.sum().mean().alias("c"),
        pl.col("rejected_turns").list.eval(pl.element().str.len_chars()).list.sum().mean().alias("r"),
    ).row(0)
    return {"chosen_chars": float(chars[0] or 0.0), "rejected_chars": float(chars[1] or 0.0)}


def source_distances(build: RoundBuild) -> list[dict[str, Any]]:
    """Each pool source's mean judge score and its distance from the base model's mean
    (paper Table 4: negatives slightly weaker than the base help most)."""
    stats = build.result.candidates
    if stats is None:
        return []
    by_source = {row["source"]: row for row in stats.to_dicts()}
    base_mean = by_source.get(build.pools.base_model, {}).get("mean_score")
    rows = []
    for pool, members in (("positive", build.pools.positive), ("negative", build.pools.negative)):
        for source, weight in members.items():
            s = by_source.get(source, {})
            mean = s.get("mean_score")
            rows.append({
                "pool": pool, "source": source, "weight": weight, "answers": int(s.get("answers", 0) or 0),
                "scored": int(s.get("scored", 0) or 0), "mean_score": mean,
                "distance_from_base": (mean - base_mean) if mean is not None and base_mean is not None else None,
            })
    return rows


def write_round(catalog: Catalog, build: RoundBuild) -> RoundBuild:
    """Write the snapshot file (atomic, never overwritten) and record it in `snapshots`."""
    config_dict = build.config.to_dict()
    snapshot_id, path, created, n_rows = write_snapshot(
        build.result.pairs, _prompts_of(catalog, build), build.config.round, config_dict,
        catalog.snapshots_dir(build.config.round),
    )
    build.snapshot_id, build.path, build.created = snapshot_id, path, created
    try:
        _record_snapshot(catalog, build, config_dict, n_rows)
    except BaseException:
        if created:  # no snapshot file without its row (the next build writes it again)
            path.unlink(missing_ok=True)
        raise
    return build


def _record_snapshot(catalog: Catalog, build: RoundBuild, config_dict: dict[str, Any], n_rows: int) -> None:
    snapshot_id, path = build.snapshot_id, build.path
    assert snapshot_id is not None and path is not None
    counts = build.result.counts
    with catalog.connect(read_only=False) as con:
        exists = con.execute("SELECT count(*) FROM snapshots WHERE snapshot_id = ?", [snapshot_id]).fetchone()
        if exists and exists[0] and build.created:
            build.result.warnings.append(
                f"the file of snapshot {snapshot_id} was damaged (truncated, or not this snapshot) "
                "and was written again"
            )
        if not exists or exists[0] == 0:
            con.execute(
                "INSERT INTO snapshots (snapshot_id, round, path, schema_version, base_model, seed, tau, "
                "n_pairs, n_matrix, n_base, config, inputs, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?, now())",
                [
                    snapshot_id, build.config.round, path.relative_to(catalog.root).as_posix(), SCHEMA_VERSION,
                    build.config.base_model, build.config.seed, build.result.tau, n_rows,
                    counts["matrix"], counts["base"], canonical_json(config_dict),
                    canonical_json({
                        "fingerprints": build.inputs_fingerprint,
                        "tau": build.result.tau,
                        "requested": build.result.requested,
                        "available": build.result.available,
                        "skipped": build.result.skipped,
                    }),
                ],
            )


def _prompts_of(catalog: Catalog, build: RoundBuild) -> pl.DataFrame:
    ids = build.result.pairs["prompt_id"].unique()
    with catalog.connect(read_only=True) as con:
        con.register("wanted", pl.DataFrame({"prompt_id": ids}).to_arrow())
        return pl.from_arrow(  # type: ignore[return-value]
            con.sql("SELECT p.prompt_id, p.messages, p.n_turns FROM prompts p "
                    "SEMI JOIN wanted USING (prompt_id)").to_arrow_table()
        )


def list_snapshots(catalog: Catalog) -> list[dict[str, Any]]:
    return catalog.arrow(
        "SELECT snapshot_id, round, n_pairs, n_matrix, n_base, base_model, seed, tau, path, created_at "
        "FROM snapshots ORDER BY round, created_at, snapshot_id"
    ).to_pylist()


def get_snapshot(catalog: Catalog, snapshot_id: str) -> dict[str, Any]:
    rows = catalog.arrow(
        "SELECT * FROM snapshots WHERE snapshot_id LIKE ? || '%' ORDER BY snapshot_id", [snapshot_id]
    ).to_pylist()
    if not rows:
        raise TSODataError(f"no snapshot {snapshot_id!r} in {catalog.root} (see `tso-data snapshots list`)")
    if len(rows) > 1:
        raise TSODataError(f"snapshot prefix {snapshot_id!r} is ambiguous: {', '.join(r['snapshot_id'] for r in rows)}")
    row = rows[0]
    row["config"] = json.loads(row["config"])
    row["inputs"] = json.loads(row["inputs"])
    return row


def snapshot_sources(catalog: Catalog, row: dict[str, Any]) -> pl.DataFrame:
    path = catalog.root / row["path"]
    if not path.is_file():
        raise TSODataError(f"{path}: snapshot file missing (recorded in `snapshots`)")
    return pl.read_parquet(path,
                           columns=["pair_id", "kind", "chosen_source", "rejected_source", "chosen_score",
                                    "rejected_score"])


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Flattened differences between two configurations.

    >>> config_diff({"seed": 43, "mix": {"base": 0.5}}, {"seed": 1, "mix": {"base": 0.5}})
    [('seed', 43, 1)]
    """
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(config_diff(va, vb, name + "."))
        elif va != vb:
            out.append((name, va, vb))
    return out
