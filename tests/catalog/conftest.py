"""Fixtures of the catalog area: a catalog loaded with the real MT-Bench, Self-Instruct and
Vicuna-eval data once per session (read in place from ../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tso_data.catalog import Catalog
from tso_data.cli.main import cli


def run_cli(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def register_vicuna_eval_models(catalog: Catalog, data: Path) -> None:
    """The Vicuna-eval models file has ids like 'vicuna-7b:20230322-fp16'; size from the name."""
    for m in jsonl(data / "vicuna_eval_gpt4_review" / "models_raw.jsonl"):
        name = str(m["model_name"])
        size = next((s for s in ("7", "13") if f"-{s}b" in name), None)
        args = ["models", "add", str(m["model_id"]), "--family", name.split("-")[0],
                "--version", str(m["model_version"]).split("-")[0], "-c", str(catalog.root)]
        if size:
            args += ["--size-b", size]
        run_cli(*args)


@pytest.fixture(scope="session")
def cli_run():
    """Invoke `tso-data ARGS...`; asserts exit 0 unless ok=False."""
    return run_cli


@pytest.fixture(scope="session")
def read_jsonl():
    return jsonl


@pytest.fixture(scope="session")
def real_catalog(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """MT-Bench + Self-Instruct + Vicuna-eval ingested through the CLI, as a user would."""
    root = tmp_path_factory.mktemp("real") / "cat"
    run_cli("init", str(root))
    c = ["-c", str(root)]
    mt, si = shared_data / "mt_bench", shared_data / "self_instruct_user_oriented"
    ve = shared_data / "vicuna_eval_gpt4_review"
    run_cli("models", "import", str(mt / "models.jsonl"), *c)
    run_cli("models", "import", str(si / "models.jsonl"), *c)
    catalog = Catalog.open(root)
    register_vicuna_eval_models(catalog, shared_data)
    run_cli("ingest", "prompts", str(mt / "questions.jsonl"), "--set", "source=mt_bench", "--map",
            "turns=turn_1,turn_2", *c)
    run_cli("ingest", "responses", str(mt / "responses.jsonl"), "--prompt-source", "mt_bench", *c)
    run_cli("ingest", "prompts", str(si / "prompts.jsonl"), "--set", "source=self_instruct", *c)
    run_cli("ingest", "answers", str(si / "prompts.jsonl"), "--map", "turns=human_output", "--prompt-source",
            "self_instruct", *c)
    run_cli("ingest", "responses", str(si / "responses.jsonl"), "--prompt-source", "self_instruct", *c)
    run_cli("ingest", "prompts", str(ve / "questions.jsonl"), "--set", "source=vicuna_eval", *c)
    run_cli("ingest", "responses", str(ve / "responses.jsonl"), "--map", "turns=text", "--prompt-source", "vicuna_eval",
            *c)
    run_cli("ingest", "judgments", str(ve / "judgments.jsonl"), "--prompt-source", "vicuna_eval",
            "--map", "model=model_1,model_2", "--map", "score=score_1,score_2", *c)
    return catalog
