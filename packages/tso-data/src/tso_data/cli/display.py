"""How commands show numbers and counts: table cells, re-parse transitions."""

from __future__ import annotations

import json
from collections.abc import Mapping

import click
from rich.console import Console
from rich.table import Table


def fmt_value(value: object, digits: int = 3) -> str:
    """A number for a table cell: 3 significant digits, whole above 1000, "-" for none.

    >>> fmt_value(0.123456), fmt_value(12345.6), fmt_value(None), fmt_value(7)
    ('0.123', '12346', '-', '7')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def show_transitions(title: str, judge: str, transitions: Mapping[str, int], as_json: bool, console: Console) -> None:
    """What a ``--reparse`` changed: rows per ``status before -> after``, as a table or JSON."""
    if as_json:
        click.echo(json.dumps({"judge": judge, "reparsed": dict(transitions)}))
        return
    table = Table(title=title)
    table.add_column("status before -> after")
    table.add_column("rows", justify="right")
    for key, n in sorted(transitions.items()):
        table.add_row(key, str(n))
    console.print(table)
