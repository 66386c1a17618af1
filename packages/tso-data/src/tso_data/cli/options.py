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

rubric_option = click.option(
    "--rubric", "rubric_names", multiple=True, metavar="NAME",
    help="Rubric to judge with (repeatable). Default: overall. See `tso-data rubrics list`.",
)
rubrics_dir_option = click.option(
    "--rubrics-dir", "rubrics_dirs", multiple=True, type=click.Path(file_okay=False, exists=True),
    help="Extra directory of rubric TOML files (overrides shipped and <catalog>/rubrics by name).",
)
