"""`tso-data eval` end to end: answers, judgments and verdicts the catalog lacks are made
first, then the leaderboard is computed from what is stored.

1. **Plan and check** (nothing is written): the split, the models, the rubrics, the
   baseline; each model lacking answers on the split needs a path or an endpoint (and an
   API key for an endpoint); the judge must run (a registered model with a backend, or
   ``fn:module:function``).
2. **Generate** for each model only the split's prompts it has no answer to, with its own
   backend (the `tso-data generate` job: resumable, shards, failures retried).
3. **Judge** every answer of the chosen models on the split with each rubric (the
   `tso-data judge` run: ``ok`` judgments are never asked again).
4. With ``pairwise``, **compare** each model's answer with the baseline's in both orders.
5. The **leaderboard** (:func:`tso_data.eval.run.leaderboard`).

Re-running asks nothing twice. ``stored_only`` skips steps 1–4.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.eval.board import Leaderboard
from tso_data.eval.judging import load_pairwise_prompt, plan_pairs, run_pairwise
from tso_data.eval.run import PAIRWISE_RUBRIC, as_catalog, leaderboard
from tso_data.eval.selection import answers_on_split, check_split, resolve_models
from tso_data.generate.backend import SamplingParams
from tso_data.generate.factory import BackendOptions, get_backend, resolve_api_key, resolve_backend_name
from tso_data.generate.job import run_generation
from tso_data.generate.plan import GenerateSpec, plan_generation, validate_sampling
from tso_data.judge import function_judge
from tso_data.judge import run as judge_run
from tso_data.judge.rubrics import resolve_rubrics, rubric_dirs
from tso_data.judge.targets import select_targets
from tso_data.matrix import ModelInfo, find_model, get_model

JUDGE_SAMPLING = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=1024)  # `tso-data judge`'s defaults


@dataclass(frozen=True)
class EvalSpec:
    judge: str
    models: tuple[str, ...] = ()
    family: str | None = None
    baseline: str | None = None
    split: str = "heldout"
    rubrics: tuple[str, ...] = ("overall",)
    rubrics_dirs: tuple[Path, ...] = ()
    pairwise: bool = False
    pairwise_prompt: Path | None = None
    pairwise_rubric: str | None = None  # which stored verdicts count; None: the pairwise prompt's name
    generation: SamplingParams = SamplingParams()
    judging: SamplingParams = JUDGE_SAMPLING
    max_attempts: int = 3
    stored_only: bool = False
    difficulty: Path | None = None
    prompt_source: str | None = None


@dataclass
class EvalRun:
    leaderboard: Leaderboard
    generated: dict[str, int] = field(default_factory=dict)  # model -> responses written
    judged: judge_run.JudgeSummary | None = None
    compared: judge_run.JudgeSummary | None = None

    def as_dict(self) -> dict[str, object]:
        return {"generated": self.generated, "judged": self.judged.as_dict() if self.judged else None,
                "compared": self.compared.as_dict() if self.compared else None, **self.leaderboard.to_dict()}


@dataclass(frozen=True)
class _Plan:
    models: tuple[str, ...]
    to_generate: dict[str, ModelInfo]  # model -> info, for models lacking answers on the split


def run_eval(catalog: Catalog | str | os.PathLike[str], spec: EvalSpec, options: BackendOptions | None = None,
             *, progress: bool = True, console: Console | None = None) -> EvalRun:
    """Make what the leaderboard lacks (unless ``spec.stored_only``), then compute it."""
    catalog = as_catalog(catalog)
    options = options or BackendOptions()
    generated: dict[str, int] = {}
    judged = compared = None
    if not spec.stored_only:
        plan = _plan(catalog, spec, options)
        for name, info in plan.to_generate.items():
            generated[name] = _generate(catalog, spec, info, options, progress, console)
        judged = _judge(catalog, spec, plan.models, options, progress)
        if spec.pairwise:
            compared = _compare(catalog, spec, plan.models, options, progress)
    board = leaderboard(
        catalog, judge=spec.judge, models=spec.models, family=spec.family, baseline=spec.baseline, split=spec.split,
        rubrics=spec.rubrics, pairwise=spec.pairwise, pairwise_rubric=_pairwise_rubric(spec),
        difficulty=spec.difficulty, prompt_source=spec.prompt_source)
    return EvalRun(board, generated, judged, compared)


def _pairwise_rubric(spec: EvalSpec) -> str:
    if spec.pairwise_rubric is not None:
        return spec.pairwise_rubric
    return load_pairwise_prompt(spec.pairwise_prompt).name if spec.pairwise_prompt else PAIRWISE_RUBRIC


def _plan(catalog: Catalog, spec: EvalSpec, options: BackendOptions) -> _Plan:
    """Every check that can fail, before anything is written."""
    validate_sampling(spec.generation, 1)
    validate_sampling(spec.judging, 1)
    if spec.max_attempts < 1:
        raise TSODataError("--max-attempts must be >= 1")
    if spec.pairwise and spec.baseline is None:
        raise TSODataError("--pairwise compares each model with a baseline: name it with --baseline")
    resolve_rubrics(list(spec.rubrics), rubric_dirs(catalog.root, list(spec.rubrics_dirs)))
    if spec.pairwise:
        load_pairwise_prompt(spec.pairwise_prompt)
    with catalog.connect(read_only=True) as con:
        n_prompts = check_split(con, spec.split)
        models = resolve_models(con, spec.judge, spec.models, spec.family, spec.baseline)
        answered = answers_on_split(con, models, spec.split)
    infos = {name: get_model(catalog, name) for name in models}
    if spec.baseline is not None and answered[spec.baseline] == 0 and not _can_generate(infos[spec.baseline]):
        raise TSODataError(f"baseline {spec.baseline!r} has no answers on split {spec.split!r} "
                           "(and no path or endpoint to generate them)")
    to_generate = {name: info for name, info in infos.items() if answered[name] < n_prompts and not info.is_human}
    for info in to_generate.values():
        _check_backend(info, options, f"model {info.name!r} lacks answers to "
                                      f"{n_prompts - answered[info.name]} prompt(s) of split {spec.split!r}")
    _check_judge(catalog, spec, options)
    return _Plan(models, to_generate)


def _can_generate(info: ModelInfo) -> bool:
    return not info.is_human and bool(info.path or info.endpoint)


def _check_backend(info: ModelInfo, options: BackendOptions, why: str) -> None:
    try:
        name = resolve_backend_name(info, options.backend)
        if name == "openai":
            resolve_api_key(str(info.endpoint), options)
    except TSODataError as exc:
        raise TSODataError(f"{why}: {exc}") from None


def _check_judge(catalog: Catalog, spec: EvalSpec, options: BackendOptions) -> None:
    if spec.judge.startswith(function_judge.FUNCTION_PREFIX):
        if spec.pairwise:
            raise TSODataError(f"--pairwise needs a judge model that compares two answers; {spec.judge!r} is a "
                               "function judge (it scores one answer at a time)")
        function_judge.load_function_judge(spec.judge)
        return
    info = find_model(catalog, spec.judge)
    if info is None:
        raise TSODataError(f"--judge {spec.judge!r} is neither a registered model nor fn:module:function, so it "
                           "cannot judge new answers; with --stored-only it ranks what this label has stored")
    _check_backend(info, options, f"judge {spec.judge!r}")


def _generate(catalog: Catalog, spec: EvalSpec, info: ModelInfo, options: BackendOptions, progress: bool,
              console: Console | None) -> int:
    quoted = info.name.replace("'", "''")
    job = GenerateSpec(model=info.name, params=spec.generation, n=1, split=spec.split,
                       where=f"prompt_id NOT IN (SELECT prompt_id FROM responses WHERE model = '{quoted}')")
    plan = plan_generation(catalog, job)
    if not plan.todo:
        return 0
    backend = get_backend(info, options)
    try:
        return run_generation(catalog, plan, backend, progress=progress, console=console).responses_written
    finally:
        backend.close()


def _judge(catalog: Catalog, spec: EvalSpec, models: tuple[str, ...], options: BackendOptions,
           progress: bool) -> judge_run.JudgeSummary:
    rubrics = resolve_rubrics(list(spec.rubrics), rubric_dirs(catalog.root, list(spec.rubrics_dirs)))
    sources = ", ".join("'" + m.replace("'", "''") + "'" for m in models)
    split = spec.split.replace("'", "''")
    targets = select_targets(catalog, where=f"split = '{split}' AND source IN ({sources})")
    summary = judge_run.JudgeSummary(judge=spec.judge)
    items = judge_run.plan_items(catalog, targets, rubrics, spec.judge, samples=1, max_attempts=spec.max_attempts,
                                 summary=summary)
    if not items:
        return summary
    if spec.judge.startswith(function_judge.FUNCTION_PREFIX):
        func, version = function_judge.load_function_judge(spec.judge)
        return function_judge.run_function_judge(catalog, items, func, judge=spec.judge, judge_version=version,
                                                 summary=summary)
    info = get_model(catalog, spec.judge)
    backend = get_backend(info, options)
    try:
        return judge_run.run_model_judge(catalog, items, backend, judge=spec.judge, judge_version=info.version,
                                         params=spec.judging, max_attempts=spec.max_attempts, summary=summary,
                                         progress=progress)
    finally:
        backend.close()


def _compare(catalog: Catalog, spec: EvalSpec, models: tuple[str, ...], options: BackendOptions,
             progress: bool) -> judge_run.JudgeSummary:
    prompt = load_pairwise_prompt(spec.pairwise_prompt)
    summary = judge_run.JudgeSummary(judge=spec.judge)
    items = plan_pairs(catalog, models, str(spec.baseline), spec.split, spec.judge, prompt, spec.max_attempts, summary)
    if not items:
        return summary
    info = get_model(catalog, spec.judge)
    backend = get_backend(info, options)
    try:
        return run_pairwise(catalog, items, backend, judge=spec.judge, judge_version=info.version, prompt=prompt,
                            params=spec.judging, max_attempts=spec.max_attempts, summary=summary, progress=progress)
    finally:
        backend.close()
