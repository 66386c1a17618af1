"""`tso-data models add | list | import`: the model matrix."""

from __future__ import annotations

import json
from collections import defaultdict

import click
from rich.console import Console
from rich.table import Table

from tso_data.catalog import Catalog
from tso_data.cli.ingest_cmds import open_catalog
from tso_data.cli.options import catalog_option, json_option
from tso_data.errors import TSODataError
from tso_data.ingest.mapping import parse_pairs
from tso_data.ingest.models import import_models
from tso_data.matrix import add_model, list_models, version_key


@click.group("models")
def models_group() -> None:
    """Register models (matrix cells: family × version × size) and show the matrix."""


@models_group.command("add")
@click.argument("name")
@catalog_option
@click.option("--family", required=True, help="Model family, e.g. acme.")
@click.option("--version", required=True,
              help="An integer (2, v2), a dotted version (3.1, v1.3; ordered numerically) "
                   "or a release date (2024-06-01).")
@click.option("--version-order", type=int, help="Explicit order key for versions like 'chat' or 'beta'.")
@click.option("--size-b", type=float, help="Parameters in billions; leave out when unknown (API models).")
@click.option("--path", help="Local weights directory (transformers / vllm backends).")
@click.option("--endpoint", help="OpenAI-compatible base URL (openai backend).")
@click.option("--backend", type=click.Choice(["transformers", "vllm", "openai"]), help="Default generation backend.")
@click.option("--note")
@click.option("--replace", is_flag=True, help="Update a model that exists with different fields.")
def add_cmd(
    name: str, catalog_path: str, family: str, version: str, version_order: int | None,
    size_b: float | None, path: str | None, endpoint: str | None, backend: str | None,
    note: str | None, replace: bool,
) -> None:
    """Register model NAME as a matrix cell. Re-adding identical fields does nothing.

    \b
    Examples:
      tso-data models add acme-v2-7b --family acme --version 2 --size-b 7 --path /models/acme-v2-7b
      tso-data models add gpt-x --family api --version 2024-06-01 --endpoint https://api.example/v1
    """
    if path and endpoint:
        raise TSODataError("give --path or --endpoint, not both")
    catalog = open_catalog(catalog_path)
    info = add_model(
        catalog, name, family=family, version=version, size_b=size_b, path=path, endpoint=endpoint,
        backend=backend, note=note, replace=replace, order=version_order,
    )
    size = f"{info.size_b:g}B" if info.size_b else "size unknown"
    version = info.version if str(info.version).lower().startswith("v") else f"v{info.version}"
    Console().print(f"model [bold]{info.name}[/]: {info.family} {version} {size}")


@models_group.command("import")
@click.argument("file", type=click.Path())
@catalog_option
@click.option("--map", "maps", multiple=True, metavar="FIELD=COLUMN", help="Take FIELD from COLUMN.")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE",
              help="Same value for every row (e.g. family=acme).")
@click.option("--replace", is_flag=True, help="Update models that exist with different fields.")
@json_option
def import_cmd(file: str, catalog_path: str, maps: tuple[str, ...], sets: tuple[str, ...], replace: bool,
               as_json: bool) -> None:
    """Register every model of FILE (JSONL/CSV/Parquet) in one transaction.

    Columns: name (or model, model_id), family, version (or model_version), version_order,
    size_b (or size), path, endpoint, backend, note. Versions that are neither integers,
    dotted versions (3.1) nor dates and have no version_order stay off the version axis;
    no size_b = off the size axis.
    """
    catalog = open_catalog(catalog_path)
    result = import_models(catalog, file, mapping=parse_pairs(maps, "--map"), constants=parse_pairs(sets, "--set"),
                           replace=replace)
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2))
        return
    console = Console()
    console.print(
        f"{file}: {len(result.added)} added, {len(result.replaced)} replaced, {len(result.unchanged)} unchanged"
    )
    if result.unordered:
        console.print("  [dim]off the version axis (version not an integer, dotted version or date):[/] "
                      + ", ".join(result.unordered))
    if result.unsized:
        console.print(f"  [dim]off the size axis (no size_b):[/] {', '.join(result.unsized)}")


def matrix_rows(catalog: Catalog) -> list[dict[str, object]]:
    """Every source with its response (or answer) counts."""
    counts = {
        r["model"]: r
        for r in catalog.arrow(
            "SELECT model, count(*) AS responses, count(DISTINCT prompt_id) AS prompts FROM responses GROUP BY model"
        ).to_pylist()
    }
    answers = {
        r["source"]: r
        for r in catalog.arrow(
            "SELECT source, count(*) AS answers, count(DISTINCT prompt_id) AS prompts FROM answers GROUP BY source"
        ).to_pylist()
    }
    rows = []
    for m in list_models(catalog):
        c = answers.get(m.name, {}) if m.is_human else counts.get(m.name, {})
        rows.append(
            {
                "name": m.name, "kind": m.kind, "family": m.family, "version": m.version,
                "version_order": m.version_order, "size_b": m.size_b, "path": m.path, "endpoint": m.endpoint,
                "responses": int(c.get("answers" if m.is_human else "responses", 0) or 0),
                "prompts": int(c.get("prompts", 0) or 0),
            }
        )
    return rows


def render_matrix(rows: list[dict[str, object]], console: Console) -> None:
    families: dict[str, list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "model":
            families[str(r["family"])].append(r)
    for family in sorted(families):
        members = families[family]
        sizes = sorted({r["size_b"] for r in members}, key=lambda s: (s is None, s or 0))
        versions = sorted(
            {(r["version_order"], r["version"]) for r in members},
            key=lambda v: (v[0] is None, version_key(v[1], v[0]) or (), str(v[1])),
        )
        table = Table(title=f"family [bold]{family}[/]", title_justify="left", show_lines=True)
        table.add_column("version \\ size")
        for s in sizes:
            table.add_column(f"{s:g}B" if s is not None else "size ?", justify="center")
        for order, version in versions:
            label = f"{version}" + ("" if order is not None else " [dim](unordered)[/]")
            cells = []
            for s in sizes:
                here = [r for r in members
                        if r["size_b"] == s and r["version"] == version and r["version_order"] == order]
                cells.append("\n".join(f"{r['name']}\n[cyan]{r['responses']:,}[/] responses" for r in here)
                             if here else "[dim]·[/]")
            table.add_row(label, *cells)
        console.print(table)
    humans = [r for r in rows if r["kind"] == "human"]
    table = Table(title="human sources", title_justify="left")
    table.add_column("source")
    table.add_column("answers", justify="right")
    table.add_column("prompts", justify="right")
    for r in humans:
        table.add_row(str(r["name"]), f"{r['responses']:,}", f"{r['prompts']:,}")
    console.print(table)


@models_group.command("list")
@catalog_option
@json_option
def list_cmd(catalog_path: str, as_json: bool) -> None:
    """Draw the model matrix: per family, versions × sizes with response counts per cell;
    human answers are their own source."""
    catalog = open_catalog(catalog_path)
    rows = matrix_rows(catalog)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    render_matrix(rows, Console(width=max(120, Console().width)))


def register(group: click.Group) -> None:
    group.add_command(models_group)
