"""`tso-data`: the command-line entry point. Each command lives in its own module and is
registered here; every TSODataError becomes one line on stderr and exit status 2."""

from __future__ import annotations

import sys

import click
import duckdb

from tso_data import __version__
from tso_data.errors import TSODataError, one_line
from tso_data.redact import redact


class TSOGroup(click.Group):
    """Turns user errors into one clear line and exit status 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TSODataError as exc:
            click.echo(f"error: {one_line(redact(str(exc)))}", err=True)
            sys.exit(2)
        except click.UsageError as exc:  # a bad flag value, a missing option: one line, not the usage block
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"error: {where}{one_line(exc.format_message())} (see --help)", err=True)
            sys.exit(2)
        except duckdb.Error as exc:  # a damaged catalog or a case no check foresaw: still one line
            click.echo(f"error: catalog database: {one_line(redact(str(exc)))}", err=True)
            sys.exit(2)


@click.group(cls=TSOGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tso-data")
def cli() -> None:
    """TSO preference data: a catalog of prompts, human answers, model-matrix generations
    and judge scores (Parquet + DuckDB, open to plain SQL), and per-round pair snapshots.

    \b
    A round, end to end:
      tso-data init catalogs/mine
      tso-data models add acme-v1-7b --family acme --version 1 --size-b 7 --path /models/v1-7b
      tso-data ingest prompts prompts.jsonl --catalog catalogs/mine
      tso-data generate --catalog catalogs/mine --model acme-v1-7b
      tso-data judge --catalog catalogs/mine --judge my-judge --model acme-v1-7b
      tso-data build --catalog catalogs/mine --round 1
    """


def _register() -> None:
    import importlib

    for name in (
        "catalog_cmds",
        "ingest_cmds",
        "models_cmds",
        "sql_cmds",
        "status_cmds",
        "generate_cmds",
        "build_cmds",
        "judge_cmds",
        "correction_cmds",
        "rubric_cmds",
        "eval_cmds",
    ):
        importlib.import_module(f"tso_data.cli.{name}").register(cli)


_register()
