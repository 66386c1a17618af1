"""`tso-data generate`: answers from one model of the matrix to the catalog's prompts."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from tso_data.catalog import Catalog
from tso_data.cli.options import catalog_option, json_option
from tso_data.errors import TSODataError
from tso_data.generate.backend import SamplingParams
from tso_data.generate.claims import WorkClaim, claim, planning_lock
from tso_data.generate.factory import BACKENDS, BackendOptions, get_backend, resolve_backend_name
from tso_data.generate.failures import all_failed
from tso_data.generate.job import GenerateResult, merge_generated, run_generation
from tso_data.generate.plan import SPLITS, GenerateSpec, Plan, parse_shard, plan_generation, validate_sampling
from tso_data.matrix import ModelInfo, get_model

EPILOG = """\b
Examples:
  # the paper's evaluation settings (T=0.7, top-p 0.9, 2048 tokens), backend from the model row
  tso-data generate -c catalogs/mine --model acme-v2-7b
  # 4 samples per prompt, reproducible, on the training split only
  tso-data generate -c catalogs/mine --model acme-v2-7b --n 4 --seed 43 --split train
  # a served model (vLLM / SGLang / TGI / transformers serve), 256 requests in flight
  tso-data generate -c catalogs/mine --model acme-v2-70b --backend openai --concurrency 256
  # worker 2 of 8 on a GPU node, vLLM with 4-way tensor parallelism
  tso-data generate -c /shared/cat --model acme-v2-70b --backend vllm --tensor-parallel-size 4 --shard 2/8

\b
Rerunning the same command resumes: responses already stored (or waiting in shards) are
skipped, failed requests are retried, and every prompt ends with exactly --n responses.
"""


@click.command("generate", epilog=EPILOG)
@catalog_option
@click.option("--model", "model_name", help="Model to generate with (a row of `models`).")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Backend; default: the model's row, else transformers for a path, openai for an endpoint.")
@click.option("--where", default=None, help="SQL filter on the prompts table, e.g. \"category = 'math'\".")
@click.option("--split", type=click.Choice(SPLITS), default="all", show_default=True, help="Prompt split.")
@click.option("--n", "n", type=int, default=1, show_default=True, help="Responses per prompt.")
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--top-p", type=float, default=0.9, show_default=True)
@click.option("--max-tokens", type=int, default=2048, show_default=True, help="Max new tokens per turn.")
@click.option("--seed", type=int, default=None, help="Sampling seed (each request derives its own).")
@click.option("--shard", "shard_text", default="0/1", show_default=True,
              help="Worker i of N (0-based): only prompts whose id hashes to i.")
@click.option("--concurrency", type=int, default=64, show_default=True, help="openai: requests in flight.")
@click.option("--client-processes", type=int, default=None,
              help="openai: client processes sharing --concurrency [one per 32 in flight, at most one per core].")
@click.option("--batch-size", type=int, default=None,
              help="transformers: prompts per generate call [8]; vllm: requests per engine call [1024].")
@click.option("--flush-every", type=int, default=512, show_default=True, help="Write a shard every K results...")
@click.option("--flush-seconds", type=float, default=30.0, show_default=True, help="...or every T seconds.")
@click.option("--device", default="auto", show_default=True, help="transformers: cpu, cuda, cuda:1, auto.")
@click.option("--dtype", default="auto", show_default=True, help="transformers/vllm: auto, bfloat16, float16, float32.")
@click.option("--tensor-parallel-size", type=int, default=1, show_default=True, help="vllm: GPUs per model.")
@click.option("--served-model", default=None, help="openai: model name the server knows [models.path, else --model].")
@click.option("--api-key-env", default=None,
              help="openai: environment variable holding the API key [OPENAI_API_KEY; optional on localhost].")
@click.option("--no-api-key", is_flag=True, help="openai: send no key (servers that need none).")
@click.option("--timeout", "request_timeout_s", type=float, default=600.0, show_default=True,
              help="openai: seconds per request attempt.")
@click.option("--max-attempts", type=int, default=6, show_default=True, help="openai: tries per request.")
@click.option("--retry-delay", type=float, default=1.0, show_default=True,
              help="openai: first back-off in seconds (doubles per retry, jittered, capped at 60; Retry-After wins).")
@click.option("--rpm", type=float, default=None, help="openai: requests-per-minute limit.")
@click.option("--tpm", type=float, default=None, help="openai: tokens-per-minute limit (prompt chars/4 + max tokens).")
@click.option("--merge/--no-merge", default=True, show_default=True,
              help="Merge shards into the catalog at the end (--no-merge: workers only write shards).")
@click.option("--merge-only", is_flag=True, help="Only merge pending shards (e.g. after --no-merge workers).")
@click.option("--dry-run", is_flag=True, help="Show what would be generated; load no model.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def generate_cmd(catalog_path: str, model_name: str | None, backend: str | None, where: str | None, split: str, n: int,
                 temperature: float, top_p: float, max_tokens: int, seed: int | None, shard_text: str, concurrency: int,
                 client_processes: int | None, batch_size: int | None, flush_every: int, flush_seconds: float,
                 device: str, dtype: str, tensor_parallel_size: int, served_model: str | None, api_key_env: str | None,
                 no_api_key: bool, request_timeout_s: float, max_attempts: int, retry_delay: float, rpm: float | None,
                 tpm: float | None, merge: bool, merge_only: bool, dry_run: bool, no_progress: bool,
                 as_json: bool) -> None:
    """Generate responses from one model of the matrix (resumable, idempotent).

    Each response is keyed by (prompt, model, sampling parameters, sample index);
    multi-turn prompts are answered turn by turn with the model's own earlier answers in
    context. Results go to Parquet shards every --flush-every results or --flush-seconds
    and are merged into `responses`; failed requests go to `failures` and are retried by
    the next run.
    """
    console = Console(stderr=True)
    catalog = Catalog.open(catalog_path)
    if merge_only:
        _merge_only(catalog, as_json)
        return
    if not model_name:
        raise TSODataError("--model is required (or pass --merge-only)")
    params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
    validate_sampling(params, n)
    _check_run_flags(client_processes, concurrency, flush_every, max_attempts, tensor_parallel_size, batch_size,
                     flush_seconds, request_timeout_s, retry_delay, rpm, tpm)
    spec = GenerateSpec(model=model_name, params=params, n=n, where=where, split=split,
                        shard=parse_shard(shard_text))
    model = get_model(catalog, model_name)
    backend_name = resolve_backend_name(model, backend)
    options = BackendOptions(
        backend=backend_name, batch_size=batch_size, device=device, dtype=dtype,
        tensor_parallel_size=tensor_parallel_size, concurrency=concurrency, client_processes=client_processes,
        served_model=served_model, api_key_env=api_key_env, no_api_key=no_api_key, request_timeout_s=request_timeout_s,
        max_attempts=max_attempts, retry_base_delay_s=retry_delay, requests_per_minute=rpm, tokens_per_minute=tpm,
    )
    _check_api_key(model, options)
    if merge:
        merge_generated(catalog)  # finish what an earlier (maybe killed) run left in shards
    plan, work = _plan_and_claim(catalog, spec, dry_run)
    try:
        header = _plan_header(plan, work, backend_name)
        if dry_run or not plan.todo:
            _emit_plan(plan, work, backend_name, header, as_json)
            return
        if not as_json:
            console.print(header)
        engine = get_backend(model, options)
        try:
            result = run_generation(catalog, plan, engine, flush_every=flush_every, flush_seconds=flush_seconds,
                                    progress=not no_progress, console=console, merge=merge)
        finally:
            engine.close()
    finally:
        if work is not None:
            work.release()
    failed_run = all_failed(result.run.requests, result.run.ok, result.run.errors)
    if failed_run:
        raise TSODataError(f"generate: {failed_run}; {result.failures_written} failure row(s) kept for the retry")
    _report(result, backend_name, as_json, console)


def _merge_only(catalog: Catalog, as_json: bool) -> None:
    added, seconds, pending = merge_generated(catalog)
    _emit({"merged_responses": added, "merge_s": round(seconds, 3), "pending": pending}, as_json,
          f"merged {added} responses in {seconds:.2f} s" + (" (catalog locked: still pending)" if pending else ""))


def _check_api_key(model: ModelInfo, options: BackendOptions) -> None:
    """An openai backend's key must be there before any work starts."""
    if options.backend == "openai":
        from tso_data.generate.factory import resolve_api_key

        resolve_api_key(str(model.endpoint), options)


def _check_run_flags(client_processes: int | None, concurrency: int, flush_every: int, max_attempts: int,
                     tensor_parallel_size: int, batch_size: int | None, flush_seconds: float,
                     request_timeout_s: float, retry_delay: float, rpm: float | None, tpm: float | None) -> None:
    """Every flag of the run checked, with its name, before any model loads."""
    if client_processes is not None:
        _check_positive(client_processes=client_processes)
    _check_positive(concurrency=concurrency, flush_every=flush_every, max_attempts=max_attempts,
                    tensor_parallel_size=tensor_parallel_size)
    if batch_size is not None:
        _check_positive(batch_size=batch_size)
    if flush_seconds <= 0 or request_timeout_s <= 0 or retry_delay < 0:
        raise TSODataError("--flush-seconds and --timeout must be > 0, --retry-delay >= 0")
    if (rpm is not None and rpm <= 0) or (tpm is not None and tpm <= 0):
        raise TSODataError("--rpm and --tpm must be > 0")


def _plan_header(plan: Plan, work: WorkClaim | None, backend_name: str) -> str:
    """One line: what the plan holds, what is done, what another running generate took."""
    spec = plan.spec
    claimed = (f"; {work.skipped} claimed by another running generate (pid "
               f"{', '.join(map(str, work.other_pids))}), left to it") if work and work.skipped else ""
    return (f"{spec.model} via {backend_name}: {plan.in_shard_prompts} prompts in shard "
            f"{spec.shard[0]}/{spec.shard[1]} (of {plan.selected_prompts} selected) × n={spec.n}; "
            f"{plan.already_done} done, {len(plan.todo)} to generate{claimed}")


def _emit_plan(plan: Plan, work: WorkClaim | None, backend_name: str, header: str, as_json: bool) -> None:
    """A dry run's answer, or a run with nothing to do."""
    payload = {"model": plan.spec.model, "backend": backend_name, "prompts": plan.in_shard_prompts,
               "already_done": plan.already_done, "todo": len(plan.todo)}
    if work and work.skipped:
        payload["claimed_by_others"] = work.skipped
    _emit(payload, as_json, header + ("" if plan.todo else " — nothing to do"))


def _plan_and_claim(catalog: Catalog, spec: GenerateSpec, dry_run: bool) -> tuple[Plan, WorkClaim | None]:
    """The plan, less what another running generate of the same model has claimed; the
    rest is claimed for this run (tso_data.generate.claims). A dry run claims nothing."""
    if dry_run:
        return plan_generation(catalog, spec), None
    with planning_lock(catalog):
        plan = plan_generation(catalog, spec)
        work, others = claim(catalog, spec.model, [c.response_id for c in plan.todo])
    plan.todo = [c for c in plan.todo if c.response_id not in others]
    return plan, work


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise TSODataError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _emit(payload: dict[str, object], as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(payload))
    else:
        Console().print(text)


def _report(result: GenerateResult, backend_name: str, as_json: bool, console: Console) -> None:
    run = result.run
    payload = {
        "model": result.plan.spec.model,
        "backend": backend_name,
        "responses_written": result.responses_written,
        "failures": result.failures_written,
        "already_done": result.plan.already_done,
        "merged_responses": result.merged_responses,
        "merge_pending": result.merge_pending,
        "merge_s": round(result.merge_s, 3),
        **run.as_dict(),
    }
    if as_json:
        click.echo(json.dumps(payload))
        return
    table = Table(title=f"generate: {result.plan.spec.model} ({backend_name})", show_header=False)
    rows = [
        ("responses written", f"{result.responses_written}"),
        ("failed (retried next run)", f"{result.failures_written}"),
        ("requests (turns)", f"{run.requests}  ({run.retries} retries)"),
        ("tokens in / out", f"{run.prompt_tokens} / {run.completion_tokens}"),
        ("wall time", f"{run.wall_s:.1f} s  ({run.requests_per_s:.1f} req/s, {run.completion_tokens_per_s:.0f} tok/s)"),
        ("catalog writes",
         f"{run.flush_s + result.merge_s:.2f} s ({run.flushes} shards, merge {result.merge_s:.2f} s)"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    for error, count in sorted(run.errors.items(), key=lambda kv: -kv[1])[:5]:
        table.add_row("[red]error[/]", f"{count} × {error}")
    if result.merge_pending:
        table.add_row("[yellow]merge[/]", "catalog locked: shards merge on the next run (or --merge-only)")
    Console().print(table)
    if result.failures_written:
        console.print(f"[yellow]{result.failures_written} failed; rerun the same command to retry them[/]")


def register(group: click.Group) -> None:
    group.add_command(generate_cmd)
