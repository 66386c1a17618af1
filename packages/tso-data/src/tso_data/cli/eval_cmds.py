"""`tso-data eval`: the leaderboard of the matrix and every round's policy; and the
`verdicts` kind of `tso-data ingest` (AlpacaEval / FastChat pairwise annotations)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tso_data.catalog import Catalog
from tso_data.cli.display import show_transitions
from tso_data.cli.options import catalog_option, json_option
from tso_data.errors import TSODataError
from tso_data.generate.backend import SamplingParams
from tso_data.generate.factory import BACKENDS, BackendOptions

EPILOG = """\b
Examples:
  # every cell of family acme (rounds' policies included), judged by judge-7b, against v1
  tso-data eval --family acme --judge judge-7b --baseline acme-v1-7b
  # AlpacaEval-style: pairwise win rates (both orders) and the length-controlled win rate
  tso-data eval --models acme-v3-7b,acme-v4-7b --judge judge-7b --baseline acme-v2-7b --pairwise
  # a verifier as judge; only what is stored, as CSV and a plot
  tso-data eval --family arith --judge fn:tso_data.examples.arith:score --stored-only --csv lb.csv --plot lb.png
  # AlpacaEval's own annotations, with its published instruction difficulties
  tso-data ingest verdicts results/my-model/weighted_alpaca_eval_gpt4_turbo/annotations.json
  tso-data eval --judge weighted_alpaca_eval_gpt4_turbo --baseline gpt4_1106_preview --pairwise \\
      --stored-only --difficulty instruction_difficulty.csv

\b
Re-running reuses every stored answer, judgment and verdict: nothing is asked twice.
"""


def _split_models(text: str | None) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip()) if text else ()


@click.command("eval", epilog=EPILOG)
@catalog_option
@click.option("--judge", required=True,
              help="Judge: a registered model (its backend runs the prompts), fn:module:function, or — with "
                   "--stored-only — the label of ingested judgments/verdicts.")
@click.option("--models", "models_text", default=None, metavar="A,B,...", help="Models to rank (comma-separated).")
@click.option("--family", default=None, help="Rank every model of this family (by version, then size).")
@click.option("--baseline", default=None, help="Model every other is compared with (paired Δ; pairwise win rates).")
@click.option("--split", default="heldout", show_default=True, help="Prompt split to evaluate on.")
@click.option("--rubric", "rubric_names", multiple=True, metavar="NAME",
              help="Rubric(s) of the pointwise score (repeatable; equal weights) [overall].")
@click.option("--rubrics-dir", "rubrics_dirs", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Extra directory of rubric TOML files.")
@click.option("--pairwise", is_flag=True, help="Also compare each model with --baseline, in both orders.")
@click.option("--pairwise-prompt", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Pairwise judge prompt (TOML) instead of the shipped one.")
@click.option("--pairwise-rubric", default=None,
              help="Which stored verdicts count (their prompt name, e.g. FastChat's pair-v2) [the prompt's name].")
@click.option("--difficulty", type=click.Path(dir_okay=False), default=None,
              help="Instruction difficulties for the length-controlled win rate (e.g. AlpacaEval's "
                   "instruction_difficulty.csv) [estimated from the compared models].")
@click.option("--prompt-source", default=None, help="Resolve --difficulty external ids among prompts of this source.")
@click.option("--stored-only", is_flag=True, help="Generate and judge nothing: the leaderboard of what is stored.")
@click.option("--temperature", type=float, default=0.7, show_default=True, help="Generation of missing answers.")
@click.option("--top-p", type=float, default=0.9, show_default=True, help="Generation of missing answers.")
@click.option("--max-tokens", type=int, default=2048, show_default=True, help="Generation: max new tokens per turn.")
@click.option("--seed", type=int, default=None, help="Generation and judging seed (each request derives its own).")
@click.option("--judge-temperature", type=float, default=0.7, show_default=True)
@click.option("--judge-max-tokens", type=int, default=1024, show_default=True)
@click.option("--max-attempts", type=int, default=3, show_default=True,
              help="Total judge attempts per judgment or verdict (earlier runs count).")
@click.option("--backend", type=click.Choice(BACKENDS), default=None, help="Override every model's backend.")
@click.option("--concurrency", type=int, default=64, show_default=True, help="openai: requests in flight.")
@click.option("--client-processes", type=int, default=None, help="openai: client processes.")
@click.option("--batch-size", type=int, default=None, help="transformers/vllm: prompts per generate call.")
@click.option("--device", default="auto", show_default=True, help="transformers: cpu, cuda, auto.")
@click.option("--api-key-env", default=None, help="openai: environment variable holding the API key.")
@click.option("--reparse", is_flag=True, help="Re-parse the judge's stored pairwise texts; calls no model.")
@click.option("--categories", is_flag=True, help="Also print the per-category table.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write the table as CSV.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a PNG.")
@click.option("--no-progress", is_flag=True)
@json_option
def eval_cmd(catalog_path: str, judge: str, models_text: str | None, family: str | None, baseline: str | None,
             split: str, rubric_names: tuple[str, ...], rubrics_dirs: tuple[str, ...], pairwise: bool,
             pairwise_prompt: str | None, pairwise_rubric: str | None, difficulty: str | None,
             prompt_source: str | None, stored_only: bool, temperature: float, top_p: float, max_tokens: int,
             seed: int | None, judge_temperature: float, judge_max_tokens: int, max_attempts: int,
             backend: str | None, concurrency: int, client_processes: int | None, batch_size: int | None,
             device: str, api_key_env: str | None, reparse: bool, categories: bool, csv_path: str | None,
             plot_path: str | None, no_progress: bool, as_json: bool) -> None:
    """Leaderboard: each model's answers on a split (generated first where missing, by the
    model's own backend), judged, then ranked — mean score ± standard error, the paired
    difference to --baseline ± standard error, and with --pairwise AlpacaEval's win rate,
    its standard error, discrete win rate, wins/losses/draws, average length and the
    length-controlled win rate."""
    from tso_data.eval.pipeline import EvalSpec, run_eval

    catalog = Catalog.open(catalog_path)
    if reparse:
        _reparse(catalog, judge, pairwise_rubric or "pairwise", as_json)
        return
    for name, value in (("concurrency", concurrency), ("client-processes", client_processes),
                        ("batch-size", batch_size), ("judge-max-tokens", judge_max_tokens)):
        if value is not None and value <= 0:
            raise TSODataError(f"--{name} must be > 0, got {value}")
    spec = EvalSpec(
        judge=judge, models=_split_models(models_text), family=family, baseline=baseline, split=split,
        rubrics=rubric_names or ("overall",), rubrics_dirs=tuple(Path(d) for d in rubrics_dirs), pairwise=pairwise,
        pairwise_prompt=Path(pairwise_prompt) if pairwise_prompt else None, pairwise_rubric=pairwise_rubric,
        generation=SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed),
        judging=SamplingParams(temperature=judge_temperature, top_p=0.9, max_tokens=judge_max_tokens, seed=seed),
        max_attempts=max_attempts, stored_only=stored_only, difficulty=Path(difficulty) if difficulty else None,
        prompt_source=prompt_source)
    options = BackendOptions(backend=backend, concurrency=concurrency, client_processes=client_processes,
                             batch_size=batch_size, device=device, api_key_env=api_key_env)
    console = Console(stderr=True)
    run = run_eval(catalog, spec, options, progress=not (no_progress or as_json), console=console)
    board = run.leaderboard
    if csv_path or plot_path:
        from tso_data.eval.report import write_csv, write_plot

        if csv_path:
            write_csv(board, Path(csv_path))
        if plot_path:
            write_plot(board, Path(plot_path))
    if as_json:
        click.echo(json.dumps(run.as_dict(), default=str))
        return
    out = Console()
    out.print(leaderboard_table(board))
    if categories:
        out.print(category_table(board))
    for note in _run_notes(run) + board.notes:
        out.print(f"[yellow]note[/]: {note}")
    for path in filter(None, (csv_path, plot_path)):
        out.print(f"written: {path}")


def _pm(value: object, error: object, digits: int = 2) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    text = f"{value:.{digits}f}"
    return text + (f" ± {error:.{digits}f}" if isinstance(error, (int, float)) else "")


def leaderboard_table(board) -> Table:
    from tso_data.eval.board import finite_rows

    title = f"leaderboard — judge {board.judge}, split {board.split} ({board.split_prompts} prompts)"
    if board.baseline:
        title += f", baseline {board.baseline}"
    table = Table(title=title)
    pairwise = "win_rate" in board.table.columns
    columns = ["model", "version", "size (B)", "n", "score", "Δ vs baseline (paired)"]
    if pairwise:
        columns += ["n pairs", "win rate", "discrete", "W / L / D", "avg len", "LC win rate"]
    for col in columns:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for r in finite_rows(board.table):
        cells = [str(r["model"]) + (" (baseline)" if r["is_baseline"] else ""), str(r["version"] or "-"),
                 f"{r['size_b']:g}" if r["size_b"] else "-", str(r["n"] or 0), _pm(r["score"], r["score_se"]),
                 "baseline" if r["is_baseline"] else _pm(r.get("delta_mean"), r.get("delta_se"))]
        if pairwise:
            cells += [str(r["n_pairwise"] or "-"), _pm(r["win_rate"], r["standard_error"], 1),
                      _pm(r["discrete_win_rate"], None, 1),
                      "-" if r["n_pairwise"] is None else f"{r['n_wins']} / {r['n_losses']} / {r['n_draws']}",
                      _pm(r["avg_length"], None, 0), _pm(r["lc_win_rate"], r["lc_standard_error"], 1)]
        table.add_row(*cells)
    if pairwise and board.difficulty:
        table.caption = f"LC win rate: instruction difficulty {board.difficulty}"
    return table


def category_table(board) -> Table:
    from tso_data.eval.board import finite_rows

    table = Table(title="per category")
    has_pairs = "win_rate" in board.categories.columns
    for col in ["model", "category", "n", "score", "Δ vs baseline"] + (["win rate"] if has_pairs else []):
        table.add_column(col, justify="left" if col in ("model", "category") else "right")
    for r in finite_rows(board.categories):
        cells = [str(r["model"]), str(r["category"] or "-"), str(r.get("n") or 0),
                 _pm(r.get("score"), r.get("score_se")),
                 _pm(r.get("delta_mean"), r.get("delta_se"))]
        if has_pairs:
            cells.append(_pm(r.get("win_rate"), r.get("standard_error"), 1))
        table.add_row(*cells)
    return table


def _run_notes(run) -> list[str]:
    notes = [f"generated {n} answer(s) of {model}" for model, n in run.generated.items() if n]
    for label, summary in (("judgments", run.judged), ("verdicts", run.compared)):
        if summary is not None and summary.calls:
            notes.append(f"{label}: {summary.calls} judge call(s), now " +
                         ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items())))
        if summary is not None and (summary.statuses.get("unparsed") or summary.statuses.get("error")):
            notes.append(f"failed {label} keep their raw text and no value; rerun to retry them")
    return notes


def _reparse(catalog: Catalog, judge: str, rubric: str, as_json: bool) -> None:
    from tso_data.eval.judging import reparse

    transitions = reparse(catalog, judge, rubric)
    show_transitions(f"re-parsed pairwise verdicts of {judge}", judge, transitions, as_json, Console())


def ingest_verdicts(catalog: Catalog, files: tuple[str, ...], constants: dict[str, str], prompt_source: str | None,
                    as_json: bool) -> None:
    """`tso-data ingest verdicts FILE...` (called by the ingest command)."""
    from tso_data.eval.ingest import ingest_verdict_files

    reports = ingest_verdict_files(catalog, list(files), constants, prompt_source)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in reports], indent=2))
        return
    table = Table(title="ingested verdicts")
    for col in ("file", "format", "records", "verdicts", "new", "unparsed", "new prompts", "new responses"):
        table.add_column(col, justify="left" if col in ("file", "format") else "right")
    for r in reports:
        table.add_row(r.file, r.format, str(r.records), str(r.verdicts), str(r.new_verdicts), str(r.unparsed),
                      str(r.new_prompts), str(r.new_responses))
    console = Console()
    console.print(table)
    for r in reports:
        if r.new_models:
            console.print(f"registered off the matrix (no family/version/size): {', '.join(r.new_models)}")


def register(group: click.Group) -> None:
    group.add_command(eval_cmd)
