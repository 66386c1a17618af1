"""`tso-data judge` (score answers with a judge) and `tso-data scores` (τ and the score
distribution). `judge-agreement` and `export judge-sft` live in correction_cmds, `rubrics`
in rubric_cmds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tso_data.catalog import Catalog
from tso_data.cli.display import fmt_value, show_transitions
from tso_data.cli.options import catalog_option, json_option, rubric_option, rubrics_dir_option
from tso_data.errors import TSODataError
from tso_data.generate.backend import SamplingParams
from tso_data.generate.factory import BackendOptions
from tso_data.generate.failures import all_failed
from tso_data.judge.rubrics import resolve_rubrics, rubric_dirs

if TYPE_CHECKING:  # the judge and its report load with the command that runs them
    from tso_data.judge.run import Item, JudgeSummary
    from tso_data.judge.scores import ScoreReport


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )


def _model_backend(catalog: Catalog, judge: str, options: BackendOptions):
    """The generation backend that runs judge model ``judge`` (a `models` row), and its version."""
    from tso_data.generate.factory import get_backend
    from tso_data.matrix import get_model

    info = get_model(catalog, judge)
    return get_backend(info, options), info.version


@click.command("judge")
@catalog_option
@click.option("--judge", "judge", required=True,
              help="Judge: a model registered with `tso-data models add` (its backend runs the prompts), "
                   "or fn:module:function for a Python function judge.")
@rubric_option
@rubrics_dir_option
@click.option("--model", "source", default=None, help="Judge the answers of this source (a model name or 'human').")
@click.option("--where", default=None, metavar="SQL",
              help="SQL condition on targets (target_id, target_kind, prompt_id, source, response_index, "
                   "turns, messages, n_turns, category, split, prompt_source).")
@click.option("--round", "round_", type=int, default=None,
              help="Judge the base model of round R (from <catalog>/round.toml) unless --model is given.")
@click.option("--reference", "reference_source", default=None, metavar="SOURCE",
              help="Show the judge an answer of SOURCE (e.g. human) for the same prompt as reference.")
@click.option("--samples", default=1, show_default=True, help="Independent judge samples per answer and rubric.")
@click.option("--max-attempts", default=3, show_default=True,
              help="Total attempts per judgment (earlier runs count) before an unparsed/error row is left as is.")
@click.option("--temperature", default=0.7, show_default=True, type=float)
@click.option("--top-p", default=0.9, show_default=True, type=float)
@click.option("--max-tokens", default=1024, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int,
              help="Base seed; each judgment and attempt gets its own.")
@click.option("--backend", "backend_name", default=None,
              help="Override the judge model's backend (transformers, openai, vllm).")
@click.option("--concurrency", default=64, show_default=True, help="openai judge: requests in flight.")
@click.option("--client-processes", type=int, default=None,
              help="openai judge: client processes sharing --concurrency [one per 32 in flight, at most one per core].")
@click.option("--rpm", type=float, default=None, help="openai judge: requests-per-minute limit.")
@click.option("--tpm", type=float, default=None, help="openai judge: tokens-per-minute limit.")
@click.option("--api-key-env", default=None,
              help="openai judge: environment variable holding the API key [OPENAI_API_KEY; optional on localhost].")
@click.option("--batch-size", type=int, default=None, help="transformers/vllm judge: prompts per generate call.")
@click.option("--reparse", is_flag=True, help="Re-parse stored judge texts with the current parser; calls no model.")
@json_option
def judge_cmd(
    catalog_path: str, judge: str, rubric_names: tuple[str, ...], rubrics_dirs: tuple[str, ...],
    source: str | None, where: str | None, round_: int | None, reference_source: str | None,
    samples: int, max_attempts: int, temperature: float, top_p: float, max_tokens: int, seed: int,
    backend_name: str | None, concurrency: int, client_processes: int | None, rpm: float | None,
    tpm: float | None, api_key_env: str | None, batch_size: int | None, reparse: bool, as_json: bool,
) -> None:
    """Score answers with an LLM judge (or a function judge) and a rubric.

    The judge's reply must end with `Score: <number>`; the LAST score claim is taken and
    range-checked against the rubric's scale. A reply without a valid score is stored with
    status 'unparsed' (raw text kept, score NULL) and re-sampled up to --max-attempts.
    Re-running resumes: ok judgments are skipped, failed ones retried.

    \b
    Examples:
      tso-data judge --judge judge-7b --model acme-v1-7b --rubric factuality --rubric logic
      tso-data judge --judge judge-7b --round 1 --samples 4
      tso-data judge --judge judge-7b --where "category = 'math'" --reference human
      tso-data judge --judge fn:my_verifiers:exact_match --model acme-v1-7b
      tso-data judge --judge gpt-4o --model acme-v1-7b --concurrency 128 --rpm 5000   # a hosted judge
      tso-data judge --judge judge-7b --reparse          # after a parser change, no model calls
    """
    from tso_data.judge import run as judge_run
    from tso_data.judge.function_judge import FUNCTION_PREFIX
    from tso_data.judge.targets import select_targets

    console = Console(stderr=as_json)
    catalog = Catalog.open(catalog_path)
    dirs = rubric_dirs(catalog.root, [Path(d) for d in rubrics_dirs])
    if reparse:
        _reparse(catalog, judge, rubric_names, dirs, as_json, console)
        return
    rubrics = resolve_rubrics(rubric_names, dirs)
    if source is None and where is None and round_ is None:
        raise TSODataError("choose what to judge: --model SOURCE, --round R and/or --where SQL")
    if source is None and round_ is not None:
        from tso_data.pairs.config import load_round_config

        source = load_round_config(catalog.round_config_path, round_).base_model
    targets = select_targets(catalog, source=source, where=where, reference_source=reference_source)
    if targets.num_rows == 0:
        raise TSODataError(f"nothing to judge: no answers match (source={source!r}, where={where!r})")
    summary = judge_run.JudgeSummary(judge=judge)
    items = judge_run.plan_items(
        catalog, targets, rubrics, judge, samples=samples, max_attempts=max_attempts, summary=summary
    )
    if judge.startswith(FUNCTION_PREFIX):
        _run_function_judge(catalog, items, judge, summary, console)
    elif items:
        options = _backend_options(backend_name, concurrency, client_processes, rpm, tpm, api_key_env, batch_size)
        params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
        _run_model_judge(catalog, items, judge, options, params, max_attempts, summary, progress=not as_json)
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
        return
    _print_summary(console, summary, max_attempts)


def _reparse(catalog: Catalog, judge: str, rubric_names: tuple[str, ...], dirs: list[Path], as_json: bool,
             console: Console) -> None:
    """`judge --reparse`: the stored texts of a model judge through the current parser."""
    from tso_data.judge.function_judge import FUNCTION_PREFIX
    from tso_data.judge.reparse import reparse
    from tso_data.matrix import find_model

    if judge.startswith(FUNCTION_PREFIX) or find_model(catalog, judge) is None:
        raise TSODataError(
            f"--reparse: {judge!r} is not a registered judge model; only texts written by "
            "`tso-data judge` with a model are re-parsed (function judges and ingested scores keep their values)"
        )
    names = [r.name for r in resolve_rubrics(rubric_names, dirs)] if rubric_names else []
    transitions = reparse(catalog, judge=judge, rubrics=names)
    show_transitions(f"re-parsed judgments of {judge}", judge, transitions, as_json, console)


def _backend_options(backend_name: str | None, concurrency: int, client_processes: int | None, rpm: float | None,
                     tpm: float | None, api_key_env: str | None, batch_size: int | None) -> BackendOptions:
    """The model judge's backend options, each checked before any model loads."""
    for name, value in (("concurrency", concurrency), ("client-processes", client_processes),
                        ("batch-size", batch_size), ("rpm", rpm), ("tpm", tpm)):
        if value is not None and value <= 0:
            raise TSODataError(f"--{name} must be > 0, got {value}")
    return BackendOptions(backend=backend_name, concurrency=concurrency, client_processes=client_processes,
                          requests_per_minute=rpm, tokens_per_minute=tpm, api_key_env=api_key_env,
                          batch_size=batch_size)


def _run_function_judge(catalog: Catalog, items: list[Item], judge: str, summary: JudgeSummary,
                        console: Console) -> None:
    from tso_data.judge.function_judge import load_function_judge, run_function_judge

    func, version = load_function_judge(judge)
    with _progress(console) as progress:
        task = progress.add_task(f"judging with {judge}", total=len(items))
        run_function_judge(
            catalog, items, func, judge=judge, judge_version=version, summary=summary,
            on_result=lambda: progress.advance(task),
        )


def _run_model_judge(catalog: Catalog, items: list[Item], judge: str, options: BackendOptions, params: SamplingParams,
                     max_attempts: int, summary: JudgeSummary, progress: bool) -> None:
    from tso_data.judge import run as judge_run

    backend, version = _model_backend(catalog, judge, options)
    try:
        judge_run.run_model_judge(
            catalog, items, backend, judge=judge, judge_version=version,
            params=params, max_attempts=max_attempts, summary=summary, progress=progress,
        )
    finally:
        backend.close()
    # a model judge's requests failing is an error; a function judge's errors are its verdicts on the answers
    failed_run = all_failed(summary.calls, summary.calls - sum(summary.errors.values()), summary.errors)
    if failed_run:
        raise TSODataError(f"judge {judge}: {failed_run}; "
                           "the failed judgments are stored as 'error' and retried next run")


def _print_summary(console: Console, summary: JudgeSummary, max_attempts: int) -> None:
    table = Table(title=f"judge {summary.judge}")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("judgments planned", str(summary.planned))
    table.add_row("already ok (skipped)", str(summary.already_ok))
    table.add_row(f"out of attempts before this run (max {max_attempts})", str(summary.exhausted))
    table.add_row("judge calls made", str(summary.calls))
    for status in ("ok", "unparsed", "error"):
        table.add_row(f"now {status}", str(summary.statuses.get(status, 0)))
    console.print(table)
    for title, counter in (("unparsed", summary.unparsed_reasons), ("error", summary.errors)):
        for reason, n in counter.most_common(3):
            console.print(f"  [yellow]{title}[/] x{n}: {reason}")
    if summary.statuses.get("unparsed", 0) or summary.statuses.get("error", 0):
        console.print(
            "  failed judgments keep their raw text and a NULL score; rerun to retry them "
            "(raise --max-attempts for more tries), or --reparse after fixing the parser"
        )


@click.command("scores")
@catalog_option
@click.option("--round", "round_", type=int, default=None,
              help="Use round R's configuration (round.toml): base model, judge, rubric weights, τ mode, split.")
@click.option("--base", default=None, help="Base model (overrides the round's).")
@click.option("--judge", default=None, help="Judge whose scores count (default: the round's, or the only one).")
@rubric_option
@click.option("--weight", "weights", multiple=True, metavar="RUBRIC=W",
              help="Weight of a rubric in the per-answer mean (repeatable; default: the round's, else equal).")
@click.option("--tau-mode", type=click.Choice(["global-mean", "prompt-mean", "fixed"]), default=None,
              help="τ: mean of all base scores (default), per-prompt mean, or --tau-value.")
@click.option("--tau-value", type=float, default=None, help="τ for --tau-mode fixed.")
@click.option("--split", default=None,
              help="Only prompts of this split (default: the round's split; all prompts without --round).")
@click.option("--min-samples", default=3, show_default=True,
              help="Scored base answers a prompt needs for skewness/kurtosis.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG: mean score per source with τ; per-prompt skewness vs kurtosis.")
@json_option
def scores_cmd(
    catalog_path: str, round_: int | None, base: str | None, judge: str | None, rubric_names: tuple[str, ...],
    weights: tuple[str, ...], tau_mode: str | None, tau_value: float | None, split: str | None,
    min_samples: int, plot: str | None, as_json: bool,
) -> None:
    """τ, score distribution per source and per-prompt score shape (paper Figure 5).

    Per answer: the mean of the judge's ok judgments per rubric, then the weighted mean over
    rubrics (an answer missing a weighted rubric has no score) — the aggregation
    `tso-data build` uses, so this τ is the one the round's pairs are split with. Base
    answers above τ become positives, the rest negatives. Failed judgments never count.

    \b
    Examples:
      tso-data scores --round 1
      tso-data scores --base acme-v1-7b --judge judge-7b --weight factuality=2 --plot scores.png
      tso-data scores --round 1 --tau-mode prompt-mean --json
    """
    from tso_data.judge.scores import load_judgments, load_split_prompts, load_targets, plot_report, score_report

    console = Console()
    catalog = Catalog.open(catalog_path)
    parsed_weights = _parse_weights(weights)
    if round_ is not None:
        from tso_data.pairs.config import load_round_config

        overrides: dict[str, object] = {}
        if base is not None:
            overrides["base_model"] = base
        if judge is not None:
            overrides["judge"] = judge
        if parsed_weights:
            overrides["rubric_weights"] = parsed_weights
        if tau_mode is not None or tau_value is not None:
            overrides["tau"] = {k: v for k, v in (("mode", tau_mode), ("value", tau_value)) if v is not None}
        if split is not None:
            overrides["split"] = split
        config = load_round_config(catalog.round_config_path, round_, overrides)
        base, judge, split = config.base_model, config.judge, config.split
        tau_mode, tau_value, rubric_weights = config.tau_mode, config.tau_value, config.rubric_weights or None
    else:
        if base is None:
            raise TSODataError("name the base model: --base MODEL or --round R")
        rubric_weights = parsed_weights or None
    report = score_report(
        load_judgments(catalog), base=base, judge=judge, tau_mode=tau_mode or "global-mean", tau_value=tau_value,
        rubric_weights=rubric_weights, rubrics=rubric_names, min_samples=min_samples,
        prompts=load_split_prompts(catalog, split) if split is not None else None, targets=load_targets(catalog),
    )
    if plot:
        plot_report(report, Path(plot))
    if as_json:
        click.echo(json.dumps(report.as_dict(), default=str))
        return
    _print_score_report(console, report, min_samples)
    if plot:
        console.print(f"plot written to {plot}")


def _parse_weights(weights: tuple[str, ...]) -> dict[str, float]:
    """``--weight RUBRIC=W`` values.

    >>> _parse_weights(("factuality=2", " logic = 0.5"))
    {'factuality': 2.0, 'logic': 0.5}
    """
    parsed: dict[str, float] = {}
    for item in weights:
        name, _, value = item.partition("=")
        try:
            parsed[name.strip()] = float(value)
        except ValueError:
            raise TSODataError(f"--weight {item!r}: expected RUBRIC=NUMBER, e.g. factuality=2") from None
    return parsed


def _print_score_report(console: Console, report: ScoreReport, min_samples: int) -> None:
    if report.tau is not None:
        console.print(f"base [bold]{report.base}[/]: τ = [bold]{fmt_value(report.tau, 4)}[/] "
                      f"({report.tau_mode}, over {report.n_base} scored base answers)")
    else:
        taus = report.tau_per_prompt.get_column("tau")
        console.print(f"base [bold]{report.base}[/]: τ per prompt ({report.tau_per_prompt.height} prompts, "
                      f"min {fmt_value(taus.min())}, median {fmt_value(taus.median())}, max {fmt_value(taus.max())}; "
                      f"{report.n_base} scored base answers)")
    table = Table(title=f"score per source{f' (judge {report.judge})' if report.judge else ''}")
    columns = ("source", "n", "mean", "std", "min", "p10", "median", "p90", "max")
    for col in columns:
        table.add_column(col, justify="left" if col == "source" else "right")
    for row in report.as_dict()["distribution"]:  # type: ignore[union-attr]
        table.add_row(*(fmt_value(row[c]) for c in columns))
    console.print(table)
    rows = report.as_dict()["per_prompt"]
    if rows:
        skews = [r["skewness"] for r in rows if r["skewness"] is not None]  # type: ignore[index]
        kurts = [r["kurtosis"] for r in rows if r["kurtosis"] is not None]  # type: ignore[index]
        console.print(
            f"per-prompt shape of {report.base}'s scores ({len(rows)} prompts with >= {min_samples} scored answers): "
            f"skewness < 0 for {sum(x < 0 for x in skews)}/{len(skews)}, "
            f"excess kurtosis < 0 for {sum(x < 0 for x in kurts)}/{len(kurts)}"
        )
    else:
        console.print(f"no prompt has >= {min_samples} scored answers of {report.base}: no per-prompt shape")


def register(group: click.Group) -> None:
    for command in (judge_cmd, scores_cmd):
        group.add_command(command)
