"""`tso-data rubrics`: list, show and check the judge rubrics (TOML files)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tso_data.cli.options import catalog_option, json_option, rubrics_dir_option
from tso_data.judge.rubrics import available_rubrics, load_rubric, rubric_dirs


@click.group("rubrics")
def rubrics_group() -> None:
    """List, show and check judge rubrics (TOML files)."""


@rubrics_group.command("list")
@catalog_option
@rubrics_dir_option
@json_option
def rubrics_list(catalog_path: str, rubrics_dirs: tuple[str, ...], as_json: bool) -> None:
    """Rubrics available to this catalog: shipped, <catalog>/rubrics, --rubrics-dir."""
    known = available_rubrics(rubric_dirs(Path(catalog_path), [Path(d) for d in rubrics_dirs]))
    if as_json:
        click.echo(json.dumps([{"name": r.name, "version": r.version, "scale": [r.scale_min, r.scale_max],
                                "description": r.description, "source": r.source} for r in known.values()]))
        return
    table = Table()
    for col in ("name", "version", "scale", "description", "file"):
        table.add_column(col)
    for r in known.values():
        table.add_row(r.name, r.version, f"{r.scale_min:g}-{r.scale_max:g}", r.description, r.source)
    Console().print(table)


@rubrics_group.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def rubrics_check(files: tuple[str, ...]) -> None:
    """Validate rubric TOML files and show the prompt a judge would see."""
    for f in files:
        rubric = load_rubric(Path(f))
        messages = rubric.render("<question>", "<answer>", "<reference>")
        Console().print(f"[green]ok[/] {f}: {rubric.name} v{rubric.version}, "
                        f"scale {rubric.scale_min:g}-{rubric.scale_max:g}")
        for m in messages:
            click.echo(f"--- {m['role']}\n{m['content']}")


def register(group: click.Group) -> None:
    group.add_command(rubrics_group)
