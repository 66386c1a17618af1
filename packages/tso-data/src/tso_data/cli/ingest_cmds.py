"""`tso-data ingest KIND FILE...` and `tso-data models {add,list,import}`."""

from __future__ import annotations

import json
import math
import os

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tso_data.catalog import Catalog
from tso_data.cli.options import catalog_option, json_option
from tso_data.errors import TSODataError
from tso_data.ingest import KINDS, ingest_files
from tso_data.ingest.fields import DEFAULT_SCALE, field_help
from tso_data.ingest.mapping import parse_pairs
from tso_data.ingest.report import FileReport

LARGE_FILE_BYTES = 20_000_000


def open_catalog(path: str) -> Catalog:
    """An existing catalog; the lock wait comes from $TSO_LOCK_TIMEOUT_S (default 10 s)."""
    catalog = Catalog.open(path)
    catalog.lock_timeout_s = float(os.environ.get("TSO_LOCK_TIMEOUT_S", catalog.lock_timeout_s))
    return catalog


def _fields_epilog() -> str:
    lines = ["\b", "Fields per kind (default columns tried in order):"]
    for kind in KINDS:
        lines.append(f"  {kind}:")
        for name, defaults, _help in field_help(kind):
            lines.append(f"    {name:<15} {defaults}")
    return "\n".join(lines)


def _parse_scale(text: str) -> tuple[float, float] | None:
    if text.lower() == "none":
        return None
    lo, sep, hi = text.partition("-")
    try:
        if not sep:
            raise ValueError
        low, high = float(lo), float(hi)
    except ValueError:
        raise TSODataError(f"--scale {text!r}: expected MIN-MAX (e.g. 1-10) or 'none'") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise TSODataError(f"--scale {text!r}: MIN and MAX must be finite numbers")
    if not low < high:
        raise TSODataError(f"--scale {text!r}: MIN must be below MAX (e.g. 1-10)")
    return low, high


@click.command(
    "ingest",
    epilog=_fields_epilog(),
)
@click.argument("kind", type=click.Choice((*KINDS, "verdicts")))
@click.argument("files", nargs=-1, required=True, type=click.Path())
@catalog_option
@click.option("--model", "-m", help="Model name for every row (responses); must be registered.")
@click.option("--map", "maps", multiple=True, metavar="FIELD=COLUMN[,COLUMN...]",
              help="Take FIELD from COLUMN. Several columns: a list field (turns) collects them; "
                   "a scalar field splits the row into one record per column (pairwise reviews).")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", help="The same value for every row.")
@click.option("--prompt-source", help="Resolve external prompt ids only among prompts of this source.")
@click.option("--scale", default=f"{DEFAULT_SCALE[0]:g}-{DEFAULT_SCALE[1]:g}", show_default=True,
              help="Judgments: the score scale; a score outside it (e.g. 0 = 'no answer') is stored "
                   "as not ok (status 'error', score NULL). 'none' accepts any number. Feedback: a score "
                   "outside its rubric's scale (the rubric file's, else this one) is an error.")
@click.option("--hf-split", help="Split to read from a saved DatasetDict.")
@json_option
def ingest_cmd(
    kind: str, files: tuple[str, ...], catalog_path: str, model: str | None, maps: tuple[str, ...],
    sets: tuple[str, ...], prompt_source: str | None, scale: str, hf_split: str | None, as_json: bool,
) -> None:
    """Load FILEs (JSONL, Parquet, CSV or a saved HF dataset directory) into the catalog.

    Each file is one transaction: any bad row (reported as FILE:LINE: field 'X': ...)
    and nothing of that file is written. Re-ingesting a file adds nothing.

    \b
    Examples:
      tso-data ingest prompts questions.jsonl --set source=mt_bench --map turns=turn_1,turn_2
      tso-data ingest responses responses.jsonl --prompt-source mt_bench
      tso-data ingest answers prompts.jsonl --map turns=human_output
      tso-data ingest responses gen.parquet --model acme-v2-7b --map prompt=question_id
      tso-data ingest judgments reviews.jsonl --map model=model_1,model_2 \\
          --map score=score_1,score_2 --set judge=gpt-4
      tso-data ingest feedback fixes.csv --set annotator=human:ana --set split=heldout
      tso-data ingest verdicts annotations.json    # AlpacaEval annotations / FastChat *_pair.jsonl
    """
    catalog = open_catalog(catalog_path)
    if kind == "verdicts":  # pairwise annotations: `tso-data eval`'s table (tso_data.eval.ingest)
        from tso_data.cli.eval_cmds import ingest_verdicts

        ingest_verdicts(catalog, files, parse_pairs(sets, "--set"), prompt_source, as_json)
        return
    console = Console(stderr=as_json)
    mapping = parse_pairs(maps, "--map")
    constants = parse_pairs(sets, "--set")
    large = any(os.path.isfile(f) and os.path.getsize(f) > LARGE_FILE_BYTES for f in files)
    done: list[FileReport] = []
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=console, transient=True, disable=not large or as_json,
    )
    task = progress.add_task("ingest", total=None)

    def hook(stage: str, done_bytes: int | None, total: int | None) -> None:
        progress.update(task, description=f"{kind}: {stage}", completed=done_bytes or 0, total=total)

    try:
        with progress:
            report = ingest_files(
                catalog, kind, files, model=model, mapping=mapping, constants=constants,
                prompt_source=prompt_source, scale=_parse_scale(scale), hf_split=hf_split,
                progress=hook, on_file=done.append,
            )
    except TSODataError:
        if done and not as_json:
            from tso_data.ingest.report import IngestReport

            IngestReport(done).render(console)
            console.print("[yellow]the files above were committed; the next one failed:[/]")
        raise
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        report.render(console)


def register(group: click.Group) -> None:
    group.add_command(ingest_cmd)
