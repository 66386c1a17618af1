"""Options shared by several commands."""

from __future__ import annotations

import os

import click

catalog_option = click.option(
    "--catalog",
    "-c",
    "catalog_path",
    default=lambda: os.environ.get("TSO_CATALOG", "catalogs/demo"),
    show_default="$TSO_CATALOG or catalogs/demo",
    type=click.Path(file_okay=False),
    help="Catalog directory.",
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
