"""`tso-data sql "QUERY"`: plain SQL over the catalog, read-only unless --write."""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime

import click
import duckdb
from rich.console import Console
from rich.table import Table

from tso_data.cli.ingest_cmds import open_catalog
from tso_data.cli.options import catalog_option
from tso_data.errors import TSODataError
from tso_data.sql_guard import check_read_only, confine


@click.command("sql")
@click.argument("query")
@catalog_option
@click.option("--json", "as_json", is_flag=True, help="Print rows as a JSON list of objects.")
@click.option("--csv", "as_csv", is_flag=True, help="Print rows as CSV.")
@click.option("--write", is_flag=True, help="Allow statements that change the catalog (one transaction).")
@click.option("--max-rows", default=100, show_default=True, help="Rows shown in the table view.")
def sql_cmd(query: str, catalog_path: str, as_json: bool, as_csv: bool, write: bool, max_rows: int) -> None:
    """Run QUERY on the catalog's DuckDB database (tables: models, prompts, answers,
    responses, judgments, feedback, failures, snapshots, meta).

    \b
    Examples:
      tso-data sql "SELECT model, count(*) FROM responses GROUP BY model"
      tso-data sql "SELECT source, avg(score) FROM judgments WHERE status='ok' GROUP BY 1" --csv
      tso-data sql "DELETE FROM judgments WHERE judge = 'old'" --write
    """
    if as_json and as_csv:
        raise TSODataError("give --json or --csv, not both")
    catalog = open_catalog(catalog_path)
    try:
        with catalog.connect(read_only=not write) as con:
            if not write:
                check_read_only(con, query)
                confine(con, catalog.root)
            rel = con.sql(query)
            if rel is None:
                columns, rows = [], []
            else:
                columns = list(rel.columns)
                rows = rel.fetchall()
    except duckdb.Error as exc:
        message = " ".join(str(exc).split())
        if not write and "read-only" in message.lower():
            message += " (pass --write to change the catalog)"
        elif not write and "disabled by configuration" in message:
            message += f" (a query without --write reads only files inside the catalog {catalog.root})"
        raise TSODataError(f"sql: {message}") from None
    if as_json:
        click.echo(json.dumps([dict(zip(columns, r)) for r in rows], default=_json_default, ensure_ascii=False,
                              indent=1))
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    elif columns:
        table = Table(show_lines=False)
        for c in columns:
            table.add_column(c, overflow="fold")
        for r in rows[:max_rows]:
            table.add_row(*[_cell(v) for v in r])
        console = Console()
        console.print(table)
        if len(rows) > max_rows:
            console.print(f"[dim]{len(rows) - max_rows:,} more rows (use --csv/--json or --max-rows)[/]")
    else:
        Console().print("ok")


def _cell(value: object) -> str:
    if value is None:
        return "[dim]NULL[/]"
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, default=_json_default, ensure_ascii=False)
    else:
        text = str(value)
    text = text.replace("[", "\\[")
    return text if len(text) <= 200 else text[:197] + "..."


def _json_default(value: object) -> object:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def register(group: click.Group) -> None:
    group.add_command(sql_cmd)
