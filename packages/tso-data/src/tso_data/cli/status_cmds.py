"""`tso-data status`: what the catalog holds and, for a round, what is still missing."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tso_data.catalog import Catalog
from tso_data.cli.ingest_cmds import open_catalog
from tso_data.cli.options import catalog_option, json_option
from tso_data.errors import TSODataError
from tso_data.matrix import get_model
from tso_data.schema import TABLES
from tso_data.shards import pending_shards


def collect_status(catalog: Catalog, round_: int | None, base: str | None) -> dict[str, Any]:
    counts = {}
    with catalog.connect(read_only=True) as con:
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in TABLES:
            if table == "meta" or table not in present:  # a catalog older than the table (e.g. verdicts)
                continue
            counts[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        split = dict(con.execute("SELECT split, count(*) FROM prompts GROUP BY split").fetchall())
        judg = dict(con.execute("SELECT status, count(*) FROM judgments GROUP BY status").fetchall())
        n_prompts = counts["prompts"]
        coverage = [
            {"source": s, "kind": k, "prompts": int(p or 0), "rows": int(n or 0), "judged_ok": int(j or 0),
             "coverage": (p or 0) / n_prompts if n_prompts else 0.0}
            for s, k, p, n, j in con.execute(
                "WITH texts AS (SELECT model AS source, prompt_id, response_id AS id FROM responses "
                "  UNION ALL SELECT source, prompt_id, answer_id FROM answers), "
                "ok AS (SELECT DISTINCT target_id FROM judgments WHERE status = 'ok') "
                "SELECT m.name, m.kind, count(DISTINCT t.prompt_id), count(t.id), count(ok.target_id) "
                "FROM models m LEFT JOIN texts t ON t.source = m.name LEFT JOIN ok ON ok.target_id = t.id "
                "GROUP BY m.name, m.kind, m.family, m.version_order, m.size_b "
                "ORDER BY m.kind, m.family, m.version_order, m.size_b, m.name"
            ).fetchall()
        ]
    status: dict[str, Any] = {
        "catalog": str(catalog.root),
        "counts": counts,
        "prompts_by_split": split,
        "judgments_by_status": judg,
        "coverage": coverage,
        "pending_shards": {t: len(pending_shards(catalog, t)) for t in TABLES if pending_shards(catalog, t)},
    }
    if round_ is not None or base is not None:
        status["round"] = round_missing(catalog, round_ or 1, base)
    return status


def round_missing(catalog: Catalog, round_: int, base: str | None) -> dict[str, Any]:
    """What round ``round_`` still lacks. Pools are resolved by `tso-data build`'s own code
    (round.toml, [round.R], the rules), so status and build never disagree."""
    from tso_data.pairs.config import load_round_config
    from tso_data.pairs.pools import resolve_pools
    from tso_data.pairs.run import load_models

    config = load_round_config(catalog.round_config_path, round_, {"base_model": base} if base else None)
    get_model(catalog, config.base_model)
    base, split, judge = config.base_model, config.split, config.judge
    try:
        pools = resolve_pools(config, load_models(catalog))
        positives, negatives, pool_error = list(pools.positive), list(pools.negative), None
    except TSODataError as exc:  # e.g. a rule that needs an orderable version: report, don't fail
        positives, negatives, pool_error = [], [], str(exc)
    judge_filter = "AND j.judge = ?" if judge else ""
    params: list[object] = [base, split]
    with catalog.connect(read_only=True) as con:
        no_base = con.execute(
            "SELECT count(*) FROM prompts p WHERE p.split = ? AND NOT EXISTS "
            "(SELECT 1 FROM responses r WHERE r.prompt_id = p.prompt_id AND r.model = ?)",
            [split, base],
        ).fetchone()[0]
        unjudged = con.execute(
            "SELECT count(*) FROM responses r JOIN prompts p USING (prompt_id) WHERE r.model = ? AND p.split = ? "
            "AND NOT EXISTS (SELECT 1 FROM judgments j "
            f"WHERE j.target_id = r.response_id AND j.status = 'ok' {judge_filter})",
            params + ([judge] if judge else []),
        ).fetchone()[0]
        pool_prompts = {}
        for name in positives + negatives:
            table, col = ("answers", "source") if name == "human" else ("responses", "model")
            pool_prompts[name] = con.execute(
                f"SELECT count(DISTINCT t.prompt_id) FROM {table} t JOIN prompts p USING (prompt_id) "
                f"WHERE t.{col} = ? AND p.split = ?",
                [name, split],
            ).fetchone()[0]
    return {
        "round": round_, "base_model": base, "split": split, "judge": judge,
        "prompts_without_base_response": int(no_base),
        "base_responses_without_ok_judgment": int(unjudged),
        "positive_sources": positives, "negative_sources": negatives,
        "pool_prompts": pool_prompts,
        "empty_pools": [n for n, c in pool_prompts.items() if c == 0],
        "pool_error": pool_error,
        "config": str(catalog.round_config_path) if catalog.round_config_path.is_file() else None,
    }


def render_status(status: dict[str, Any], console: Console) -> None:
    table = Table(title=f"catalog {status['catalog']}", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("detail")
    details = {
        "prompts": ", ".join(f"{k} {v:,}" for k, v in sorted(status["prompts_by_split"].items())),
        "judgments": ", ".join(f"{k} {v:,}" for k, v in sorted(status["judgments_by_status"].items())),
    }
    for name, n in status["counts"].items():
        shards = status["pending_shards"].get(name)
        detail = details.get(name, "")
        if shards:
            detail += f" [yellow]{shards} shard(s) pending merge[/]"
        table.add_row(name, f"{n:,}", detail)
    console.print(table)
    cov = Table(title="matrix coverage", title_justify="left")
    for c in ("source", "prompts", "texts", "judged ok", "coverage"):
        cov.add_column(c, justify="left" if c == "source" else "right")
    for row in status["coverage"]:
        cov.add_row(
            row["source"] + (" (human)" if row["kind"] == "human" else ""), f"{row['prompts']:,}",
            f"{row['rows']:,}", f"{row['judged_ok']:,}", f"{row['coverage']:.0%}",
        )
    console.print(cov)
    r = status.get("round")
    if r:
        console.print(f"[bold]round {r['round']}[/]: base [bold]{r['base_model']}[/], split {r['split']}"
                      + (f", judge {r['judge']}" if r["judge"] else ""))
        todo = [
            (r["prompts_without_base_response"], "prompts without a base-model response", "tso-data generate"),
            (r["base_responses_without_ok_judgment"], "base responses without an ok judgment", "tso-data judge"),
            (len(r["empty_pools"]),
             "pool sources with no answers" + (": " + ", ".join(r["empty_pools"]) if r["empty_pools"] else ""), ""),
        ]
        for n, what, how in todo:
            mark = "[green]✓[/]" if n == 0 else "[yellow]![/]"
            console.print(f"  {mark} {n:,} {what}" + (f"  [dim]({how})[/]" if n and how else ""))
        if r.get("pool_error"):
            console.print(f"  [yellow]![/] pools cannot be resolved: {r['pool_error']}")
        else:
            console.print(f"  positives: {', '.join(r['positive_sources'])}; "
                          f"negatives: {', '.join(r['negative_sources']) or 'none'}")


@click.command("status")
@catalog_option
@click.option("--round", "round_", type=int, help="Also report what round R still lacks (base model from round.toml).")
@click.option("--base", help="Base model of the round (overrides round.toml's base_model).")
@json_option
def status_cmd(catalog_path: str, round_: int | None, base: str | None, as_json: bool) -> None:
    """Counts per table, matrix coverage, pending shards; with --round/--base: prompts
    without a base-model response, base responses without an ok judgment, empty pools."""
    catalog = open_catalog(catalog_path)
    status = collect_status(catalog, round_, base)
    if as_json:
        click.echo(json.dumps(status, indent=2, default=str))
    else:
        render_status(status, Console())


def register(group: click.Group) -> None:
    group.add_command(status_cmd)
