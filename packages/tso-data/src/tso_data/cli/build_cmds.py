"""`tso-data build` and `tso-data snapshots list|show|diff`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tso_data import speed
from tso_data.catalog import Catalog
from tso_data.cli.options import catalog_option, json_option
from tso_data.errors import TSODataError
from tso_data.pairs.config import load_round_config
from tso_data.pairs.run import (
    RoundBuild,
    config_diff,
    get_snapshot,
    list_snapshots,
    plan_round,
    snapshot_sources,
    source_distances,
    write_round,
)

SOURCE_KEYS = ("kind", "chosen_source", "rejected_source")  # the pairs counted per (kind, chosen, rejected)


def _weights(values: tuple[str, ...], flag: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for v in values:
        name, sep, w = v.rpartition("=")
        try:
            out[name] = float(w)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise TSODataError(f"{flag} {v!r}: expected NAME=WEIGHT, e.g. {flag} human=0.5")
        if not math.isfinite(out[name]) or out[name] < 0:
            raise TSODataError(f"{flag} {v!r}: a weight is a finite number >= 0")
    return out


@click.command("build")
@click.option("--round", "-r", "round_", type=int, required=True, help="Round number R (1, 2, ...).")
@catalog_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Round configuration TOML.", show_default="<catalog>/round.toml")
@click.option("--base-model", help="The round's base model (a models.name).")
@click.option("--pairs", "-n", type=int, help="Total pairs N (default: as many as the mix allows).")
@click.option("--matrix-ratio", type=float, help="Share of matrix pairs; base pairs get the rest (round.toml mix).")
@click.option("--max-per-prompt", type=int, help="At most this many pairs of each kind per prompt.")
@click.option("--positive", multiple=True, help="Positive source or rule (repeatable; replaces positive.sources).")
@click.option("--negative", multiple=True, help="Negative source or rule (repeatable; replaces negative.sources).")
@click.option("--positive-weight", multiple=True, help="NAME=WEIGHT for a positive item or source (repeatable).")
@click.option("--negative-weight", multiple=True, help="NAME=WEIGHT for a negative item or source (repeatable).")
@click.option("--tau-mode", type=click.Choice(["global-mean", "prompt-mean", "fixed"]), help="How τ is set.")
@click.option("--tau", "tau_value", type=float, help="τ for --tau-mode fixed (implies it).")
@click.option("--pairing", type=click.Choice(["best-worst", "random"]), help="How base answers are paired.")
@click.option("--judge", help="Whose judge scores count (required if several judges exist).")
@click.option("--seed", type=int, help="Random seed.", show_default="43")
@click.option("--split", help="Prompts split to build from.", show_default="train")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("--strict", is_flag=True, help="Fewer pairs than asked is an error (exit 2) instead of a warning.")
@json_option
def build_cmd(round_: int, catalog_path: str, config_path: str | None, dry_run: bool, strict: bool,
              as_json: bool, **flags: Any) -> None:
    """Build round R's preference pairs into an immutable snapshot.

    \b
    Pools, weights, τ and the pair mix come from <catalog>/round.toml ([round.R] tables
    override its top level) and these flags override both. The snapshot is written to
    <catalog>/snapshots/round-R/<id>.parquet; the id is a content hash, so rebuilding
    with the same inputs, config and seed gives the same file.

    \b
    Examples:
      tso-data build --round 1 --dry-run
      tso-data build --round 1
      tso-data build --round 2 --base-model acme-v2-7b --pairs 20000 --matrix-ratio 0.5
      tso-data build --round 1 --negative acme-v1-1b --negative-weight acme-v1-1b=1 --strict --json
    """
    catalog = Catalog.open(catalog_path)
    path = catalog.round_config_path if config_path is None else Path(config_path)
    if config_path is not None and not path.is_file():
        raise TSODataError(f"{path}: config file not found")
    config = load_round_config(path, round_, _overrides(flags))
    speed.apply(speed.BUILD)  # before the inputs are read
    build = plan_round(catalog, config)
    if not dry_run:
        shortfall = [w for w in build.result.warnings if w.startswith("fewer ")]
        if strict and shortfall:
            raise TSODataError("--strict: " + "; ".join(shortfall))
        if build.result.pairs.height == 0:
            why = f": {build.tau_problem}" if build.tau_problem else ""
            raise TSODataError(f"no pair could be built{why} (see `tso-data build --dry-run` for skipped prompts)")
        write_round(catalog, build)
    report = _report(build, dry_run)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    _print_report(Console(), build, report, dry_run)


def _check_flags(flags: dict[str, Any]) -> None:
    """Numeric flags, named as typed (round.toml's own values are checked by field)."""
    for flag in ("pairs", "max_per_prompt"):
        if flags.get(flag) is not None and flags[flag] < 1:
            raise TSODataError(f"--{flag.replace('_', '-')} {flags[flag]}: expected an integer >= 1")
    seed = flags.get("seed")
    if seed is not None and not 0 <= seed < 2**63:
        raise TSODataError(f"--seed {seed}: expected an integer from 0 to 2^63 - 1")
    tau = flags.get("tau_value")
    if tau is not None and not math.isfinite(tau):
        raise TSODataError(f"--tau {tau}: τ must be a finite number (a score on the judge's scale)")
    ratio = flags.get("matrix_ratio")
    if ratio is not None and not 0 <= ratio <= 1:
        raise TSODataError(f"--matrix-ratio {ratio}: expected a number between 0 and 1")


def _overrides(flags: dict[str, Any]) -> dict[str, Any]:
    _check_flags(flags)
    o: dict[str, Any] = {}
    simple = {"base_model": "base_model", "pairs": "pairs", "max_per_prompt": "max_pairs_per_prompt",
              "seed": "seed", "split": "split", "judge": "judge"}
    for flag, key in simple.items():
        if flags.get(flag) is not None:
            o[key] = flags[flag]
    if flags.get("matrix_ratio") is not None:
        r = flags["matrix_ratio"]
        o["mix"] = {"matrix": r, "base": 1 - r}
    for pool in ("positive", "negative"):
        table: dict[str, Any] = {}
        if flags.get(pool):
            table["sources"] = list(flags[pool])
        if flags.get(f"{pool}_weight"):
            table["weights"] = _weights(flags[f"{pool}_weight"], f"--{pool}-weight")
        if table:
            o[pool] = table
    if flags.get("tau_value") is not None:
        o["tau"] = {"mode": flags.get("tau_mode") or "fixed", "value": flags["tau_value"]}
    elif flags.get("tau_mode"):
        o["tau"] = {"mode": flags["tau_mode"]}
    if flags.get("pairing"):
        o["base_pairs"] = {"pairing": flags["pairing"]}
    return o


def _report(build: RoundBuild, dry_run: bool) -> dict[str, Any]:
    r = build.result
    pairs = r.pairs
    sources = (
        pairs.group_by(*SOURCE_KEYS).len().sort(*SOURCE_KEYS).to_dicts()
        if pairs.height else []
    )
    return {
        "round": build.config.round,
        "dry_run": dry_run,
        "snapshot_id": build.snapshot_id,
        "path": str(build.path) if build.path else None,
        "created": build.created,
        "base_model": build.config.base_model,
        "tau": r.tau,
        "tau_mode": build.config.tau_mode,
        "pools": {"positive": build.pools.positive, "negative": build.pools.negative},
        "membership": build.pools.membership,
        "cells": build.cells,
        "requested": r.requested,
        "available": r.available,
        "pairs": r.counts,
        "pairs_by_source": sources,
        "skipped_prompts": r.skipped,
        "sources": source_distances(build),
        "lengths": build.lengths,
        "warnings": r.warnings,
    }


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def _print_report(console: Console, build: RoundBuild, rep: dict[str, Any], dry_run: bool) -> None:
    title = f"round {rep['round']} — base {rep['base_model']}"
    console.print(f"[bold]{'plan' if dry_run else 'built'}: {title}[/]")
    if dry_run and rep["cells"]:
        cells = Table(title="model matrix (base family) and pool membership")
        for col in ("source", "version", "size (B)", "role (weight)", "responses"):
            cells.add_column(col, justify="right" if col in ("size (B)", "responses") else "left")
        for c in rep["cells"]:
            cells.add_row(c["source"], str(c["version"] or "–"), _fmt(c["size_b"], "g"), c["role"], str(c["responses"]))
        console.print(cells)
    pools = Table(title="pools (weights renormalised per prompt over sources with an answer)")
    for col in ("pool", "source", "weight", "answers", "scored", "mean score", "Δ vs base"):
        pools.add_column(col, justify="right" if col not in ("pool", "source") else "left")
    for row in rep["sources"]:
        pools.add_row(row["pool"], row["source"], f"{row['weight']:.3f}", str(row["answers"]), str(row["scored"]),
                      _fmt(row["mean_score"]), _fmt(row["distance_from_base"], "+.3f"))
    console.print(pools)
    tau = rep["tau"]
    tau_text = _fmt(tau) if tau is not None else "per prompt" if build.config.mix_base > 0 else "not needed"
    console.print(f"τ ({rep['tau_mode']}): {tau_text}")
    kinds = Table(title="pairs per kind")
    for col in ("kind", "asked", "possible", "built" if not dry_run else "would build"):
        kinds.add_column(col, justify="right" if col != "kind" else "left")
    for kind in ("matrix", "base"):
        built = rep["pairs"][kind]
        kinds.add_row(kind, str(rep["requested"][kind]), str(rep["available"][kind]), str(built))
    console.print(kinds)
    if rep["pairs_by_source"]:
        by = Table(title="chosen vs rejected sources")
        for col in ("kind", "chosen", "rejected", "pairs"):
            by.add_column(col, justify="right" if col == "pairs" else "left")
        for row in rep["pairs_by_source"]:
            by.add_row(row["kind"], row["chosen_source"], row["rejected_source"], str(row["len"]))
        console.print(by)
    skipped = {k: v for k, v in rep["skipped_prompts"].items() if v}
    if skipped:
        sk = Table(title="prompts skipped")
        sk.add_column("reason")
        sk.add_column("prompts", justify="right")
        for reason, n in skipped.items():
            sk.add_row(reason, str(n))
        console.print(sk)
    if rep["lengths"]:
        lengths = rep["lengths"]
        console.print(f"mean length: chosen {lengths['chosen_chars']:.0f} chars, "
                      f"rejected {lengths['rejected_chars']:.0f} chars")
    for w in rep["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    if not dry_run:
        if rep["created"]:
            console.print(f"[green]snapshot {rep['snapshot_id']}[/] → {rep['path']}")
        else:
            console.print(f"snapshot {rep['snapshot_id']} already exists (same inputs, config and seed) "
                          f"→ {rep['path']}")


# -- snapshots -------------------------------------------------------------------------


@click.group("snapshots")
def snapshots_group() -> None:
    """List, inspect and compare the pair snapshots of a catalog.

    \b
    Examples:
      tso-data snapshots list
      tso-data snapshots show 3f2a            # an id prefix is enough
      tso-data snapshots diff 3f2a 9b1c
    """


@snapshots_group.command("list")
@catalog_option
@json_option
def snapshots_list(catalog_path: str, as_json: bool) -> None:
    """All snapshots, by round."""
    rows = list_snapshots(Catalog.open(catalog_path))
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    t = Table(title="snapshots")
    for col in ("id", "round", "pairs", "matrix", "base", "base model", "seed", "τ", "created"):
        t.add_column(col, no_wrap=col in ("id", "created"))
    for r in rows:
        t.add_row(r["snapshot_id"], str(r["round"]), str(r["n_pairs"]), str(r["n_matrix"]), str(r["n_base"]),
                  r["base_model"], str(r["seed"]), _fmt(r["tau"]), str(r["created_at"])[:19])
    Console().print(t)


@snapshots_group.command("show")
@click.argument("snapshot_id")
@catalog_option
@json_option
def snapshots_show(snapshot_id: str, catalog_path: str, as_json: bool) -> None:
    """One snapshot: configuration, inputs, counts and its sources."""
    catalog = Catalog.open(catalog_path)
    row = get_snapshot(catalog, snapshot_id)
    pairs = snapshot_sources(catalog, row)
    by = pairs.group_by(*SOURCE_KEYS).len().sort(*SOURCE_KEYS)
    if as_json:
        row["pairs_by_source"] = by.to_dicts()
        click.echo(json.dumps(row, indent=2, default=str))
        return
    console = Console()
    console.print(f"[bold]snapshot {row['snapshot_id']}[/] round {row['round']} → {catalog.root / row['path']}")
    console.print(f"pairs {row['n_pairs']} (matrix {row['n_matrix']}, base {row['n_base']}); "
                  f"τ {_fmt(row['tau'])}; seed {row['seed']}")
    console.print_json(json.dumps(row["config"]))
    t = Table(title="chosen vs rejected sources")
    for col in ("kind", "chosen", "rejected", "pairs"):
        t.add_column(col)
    for r in by.iter_rows():
        t.add_row(*[str(x) for x in r])
    console.print(t)


@snapshots_group.command("diff")
@click.argument("a")
@click.argument("b")
@catalog_option
@json_option
def snapshots_diff(a: str, b: str, catalog_path: str, as_json: bool) -> None:
    """Compare two snapshots: counts, configuration differences, pair overlap."""
    catalog = Catalog.open(catalog_path)
    ra, rb = get_snapshot(catalog, a), get_snapshot(catalog, b)
    pa_, pb = snapshot_sources(catalog, ra), snapshot_sources(catalog, rb)
    ids_a, ids_b = set(pa_["pair_id"].to_list()), set(pb["pair_id"].to_list())
    report = {
        "a": ra["snapshot_id"], "b": rb["snapshot_id"],
        "counts": {k: [ra[k], rb[k]] for k in ("round", "n_pairs", "n_matrix", "n_base", "tau")},
        "config": [{"key": k, "a": va, "b": vb} for k, va, vb in config_diff(ra["config"], rb["config"])],
        "inputs": [{"key": k, "a": va, "b": vb} for k, va, vb in config_diff(ra["inputs"]["fingerprints"],
                                                                             rb["inputs"]["fingerprints"])],
        "overlap": {"shared": len(ids_a & ids_b), "only_a": len(ids_a - ids_b), "only_b": len(ids_b - ids_a)},
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    console = Console()
    t = Table(title=f"{report['a']} vs {report['b']}")
    for col in ("", "a", "b"):
        t.add_column(col)
    for k, (va, vb) in report["counts"].items():
        t.add_row(k, str(va), str(vb))
    for d in report["config"]:
        t.add_row(f"config {d['key']}", json.dumps(d["a"]), json.dumps(d["b"]))
    for d in report["inputs"]:
        t.add_row(f"input {d['key']}", str(d["a"]), str(d["b"]))
    console.print(t)
    o = report["overlap"]
    console.print(f"pairs shared {o['shared']}, only in a {o['only_a']}, only in b {o['only_b']}")


def register(group: click.Group) -> None:
    group.add_command(build_cmd)
    group.add_command(snapshots_group)

