"""`tso-data init`."""

from __future__ import annotations

import click
from rich.console import Console

from tso_data.catalog import Catalog


@click.command("init")
@click.argument("catalog_path", metavar="CATALOG", type=click.Path(file_okay=False))
def init_cmd(catalog_path: str) -> None:
    """Create an empty catalog directory CATALOG (idempotent)."""
    catalog = Catalog.init(catalog_path)
    Console().print(f"catalog ready: [bold]{catalog.root}[/] ({catalog.db_path.name})")


def register(group: click.Group) -> None:
    group.add_command(init_cmd)
