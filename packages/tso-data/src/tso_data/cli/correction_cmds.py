"""`tso-data judge-agreement` and `export judge-sft`: evaluation correction, from feedback to a
judge-SFT set and back to how well the corrected judge agrees (docs/design.md, 1. The method)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tso_data.catalog import Catalog
from tso_data.cli.display import fmt_value
from tso_data.cli.options import catalog_option, json_option, rubric_option, rubrics_dir_option
from tso_data.judge.rubrics import available_rubrics, rubric_dirs


@click.command("judge-agreement")
@catalog_option
@click.option("--judge", "judges", multiple=True, required=True,
              help="Judge to evaluate (repeat to compare, e.g. before/after correction).")
@click.option("--against", type=click.Choice(["feedback"]), default="feedback", show_default=True)
@click.option("--split", default="heldout", show_default=True, help="Feedback split to compare against.")
@rubric_option
@json_option
def agreement_cmd(catalog_path: str, judges: tuple[str, ...], against: str, split: str,
                  rubric_names: tuple[str, ...], as_json: bool) -> None:
    """Agreement of judges with held-out feedback scores: Pearson, Spearman, MAE,
    pairwise accuracy (answers to the same prompt ranked as the feedback ranks them).

    \b
    Example (did the correction help?):
      tso-data judge-agreement --judge judge-7b --judge judge-7b-corrected
    """
    from tso_data.judge.correction import judge_agreement

    catalog = Catalog.open(catalog_path)
    results = judge_agreement(catalog, list(judges), rubrics=rubric_names, split=split)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results]))
        return
    table = Table(title=f"agreement with {split} feedback (same {results[0].n} items for every judge)")
    for col in ("judge", "n", "missing", "pearson", "spearman", "MAE", "pairwise acc", "pairs"):
        table.add_column(col, justify="left" if col == "judge" else "right")
    for r in results:
        table.add_row(r.judge, str(r.n), str(r.n_missing), fmt_value(r.pearson), fmt_value(r.spearman),
                      fmt_value(r.mae),
                      fmt_value(r.pairwise_accuracy), str(r.n_pairs))
    Console().print(table)


@click.command("judge-sft")
@catalog_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output Parquet file (written atomically).")
@rubric_option
@rubrics_dir_option
@click.option("--reference", "reference_source", default=None, metavar="SOURCE",
              help="Include SOURCE's answer as reference, as `judge --reference` does.")
def export_judge_sft_cmd(catalog_path: str, out: str, rubric_names: tuple[str, ...], rubrics_dirs: tuple[str, ...],
                         reference_source: str | None) -> None:
    """Export train-split feedback as judge-SFT conversations.

    Each row's `messages` is the rubric's judge prompt (system, user) followed by the
    assistant turn `<rationale>\\n\\nScore: <score>`; TRL's SFTTrainer and `tso-train sft`
    read the file as it is.

    \b
    Example:
      tso-data export judge-sft --out judge-sft.parquet
      tso-train sft judge-sft.parquet --model /models/judge-7b --out /models/judge-7b-corrected
    """
    from tso_data.judge.correction import export_judge_sft

    catalog = Catalog.open(catalog_path)
    known = available_rubrics(rubric_dirs(catalog.root, [Path(d) for d in rubrics_dirs]))
    n = export_judge_sft(catalog, Path(out), known, only=rubric_names, reference_source=reference_source)
    Console().print(f"wrote {n} judge-SFT conversations to [bold]{out}[/]")


def _subgroup(group: click.Group, name: str, help_text: str) -> click.Group:
    """The existing sub-group ``name`` (another area may own it) or a new one."""
    existing = group.commands.get(name)
    if isinstance(existing, click.Group):
        return existing
    new = click.Group(name, help=help_text)
    group.add_command(new)
    return new



def register(group: click.Group) -> None:
    group.add_command(agreement_cmd)
    _subgroup(group, "export", "Export catalog data as files other tools read.").add_command(export_judge_sft_cmd)
