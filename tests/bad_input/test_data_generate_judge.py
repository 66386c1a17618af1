"""Bad input to `tso-data generate` and `tso-data judge`: every flag checked before a model
is loaded or a request sent, shards that break the table's rules refused, each with one
line, exit 2 and the catalog unchanged (tests/bad_input/catalog_harness.py). The endpoint
models of the base catalog point at a port nobody listens on: no case gets that far."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog_harness import Case, Ctx, base_catalog, case, run_case  # noqa: E402

from tso_data.judge.run import JUDGMENT_SCHEMA  # noqa: E402

__all__ = ["base_catalog"]

G = "generate --model stub-m --dry-run"
GEN = "generate --model stub-m"

GENERATE = [
    case("temperature-negative", GEN + " --temperature -0.5", "--temperature must be >= 0, got -0.5"),
    case("top-p-zero", GEN + " --top-p 0", "--top-p must be in (0, 1], got 0.0"),
    case("top-p-above-one", GEN + " --top-p 1.5", "--top-p must be in (0, 1]"),
    case("max-tokens-zero", GEN + " --max-tokens 0", "--max-tokens must be >= 1"),
    case("n-zero", GEN + " --n 0", "--n must be >= 1"),
    case("shard-out-of-range", GEN + " --shard 3/3", "--shard '3/3': expected i/N with 0 <= i < N"),
    case("shard-malformed", GEN + " --shard half", "--shard 'half'"),
    case("concurrency-zero", GEN + " --concurrency 0", "--concurrency must be >= 1"),
    case("client-processes-zero", GEN + " --client-processes 0", "--client-processes must be >= 1"),
    case("batch-size-zero", GEN + " --batch-size 0", "--batch-size must be >= 1"),
    case("flush-every-zero", GEN + " --flush-every 0", "--flush-every must be >= 1"),
    case("flush-seconds-zero", GEN + " --flush-seconds 0", "--flush-seconds and --timeout must be > 0"),
    case("rpm-zero", GEN + " --rpm 0", "--rpm and --tpm must be > 0"),
    case("max-attempts-zero", GEN + " --max-attempts 0", "--max-attempts must be >= 1"),
    case("model-unknown", "generate --model nobody", "unknown model 'nobody'"),
    case("model-missing", "generate", "--model is required"),
    case("model-without-path-or-endpoint", "generate --model acme-v1-1b", "'acme-v1-1b' has neither a path nor an endpoint"),
    case("split-unknown", GEN + " --split test", "Invalid value for '--split'"),
    case("where-appends-a-statement", ["generate", "--model", "stub-m", "--dry-run", "--where", "true); COPY (SELECT 1) TO 'x.csv'; SELECT (1"],
         "--where", "expected one SQL condition, not several statements"),
    case("where-unknown-column", ["generate", "--model", "stub-m", "--dry-run", "--where", "no_such_column = 1"], "--where 'no_such_column = 1'"),
    case("where-matches-nothing", ["generate", "--model", "stub-m", "--dry-run", "--where", "category = 'none'"], "no prompts match"),
    case("api-key-variable-unset", GEN + " --api-key-env TSO_TEST_NO_SUCH_KEY", "missing API key: environment variable TSO_TEST_NO_SUCH_KEY is not set"),
    case("backend-without-path", GEN + " --backend transformers", "the transformers backend needs a local path"),
]


def _shard(rows: list[dict[str, object]], schema: pa.Schema = JUDGMENT_SCHEMA):
    def setup(ctx: Ctx) -> None:
        directory = ctx.cat / "shards" / "judgments"
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), directory / "planted.parquet")
    return setup


def judgment(**kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "judgment_id": "0123456789abcdef", "target_id": "0123456789abcdef", "target_kind": "response",
        "prompt_id": "0123456789abcdef", "source": "acme-v1-1b", "judge": "j", "judge_version": None,
        "rubric": "overall", "rubric_version": "1", "sample_index": 0, "raw_text": "Score: 7", "score": 7.0,
        "status": "ok", "attempts": 1, "scale_min": 1.0, "scale_max": 10.0, "created_at": datetime(2024, 1, 1),
    }
    row.update(kw)
    return row


FN = "judge --judge fn:tso_data.examples.arith:score --model acme-v1-1b"
J = "judge --judge judge-m --model acme-v1-1b"

JUDGE = [
    case("fn-module-missing", "judge --judge fn:no_such_module_xyz:f --model acme-v1-1b", "cannot import module 'no_such_module_xyz'"),
    case("fn-function-missing", "judge --judge fn:json:no_such_fn --model acme-v1-1b", "has no callable 'no_such_fn'"),
    case("fn-malformed", "judge --judge fn:oops --model acme-v1-1b", "expected fn:module:function"),
    case("rubric-unknown", FN + " --rubric nope", "unknown rubric(s) nope"),
    case("nothing-selected", "judge --judge judge-m", "choose what to judge"),
    case("source-without-answers", "judge --judge judge-m --model nobody", "nothing to judge"),
    case("judge-where-unknown-column", ["judge", "--judge", "judge-m", "--where", "no_such_column = 1"], "--where 'no_such_column = 1'"),
    case("judge-where-appends-a-statement", ["judge", "--judge", "judge-m", "--where", "true); COPY (SELECT 1) TO 'x.csv'; SELECT (1"],
         "expected one SQL condition"),
    case("judge-samples-zero", FN + " --samples 0", "--samples must be >= 1"),
    case("judge-max-attempts-zero", FN + " --max-attempts 0", "--max-attempts must be >= 1"),
    case("judge-concurrency-zero", J + " --concurrency 0", "--concurrency must be > 0"),
    case("judge-rpm-negative", J + " --rpm -5", "--rpm must be > 0"),
    case("reparse-function-judge", "judge --judge fn:json:dumps --reparse", "not a registered judge model"),
    case("rubrics-dir-missing", FN + " --rubrics-dir {tmp}/none", "Invalid value for '--rubrics-dir'"),
    case("round-2-without-its-table", "judge --judge judge-m --round 2", "no [round.2] table",
         setup=lambda ctx: (ctx.cat / "round.toml").write_text('base_model = "acme-v2-1b"\n[round.1]\nseed = 1\n')),
    case("round-toml-is-a-directory", "judge --judge judge-m --round 1", "round.toml: not a file",
         setup=lambda ctx: ((ctx.cat / "round.toml").unlink(), (ctx.cat / "round.toml").mkdir())),
    case("shard-ok-with-nan-score", FN, "planted.parquet:1: field 'score': expected a finite number, got 'nan'", "nothing was merged",
         setup=_shard([judgment(score=float("nan"))])),
    case("shard-ok-without-score", FN, "planted.parquet:2: field 'score'", setup=_shard([judgment(), judgment(judgment_id="0123456789abcdee", score=None)])),
    case("shard-score-outside-scale", FN, "planted.parquet:1: field 'score': '11.0' is outside the judgment's scale",
         setup=_shard([judgment(score=11.0)])),
    case("shard-malformed-id", FN, "planted.parquet:1: field 'judgment_id': expected a 16-hex-digit id, got 'x'", setup=_shard([judgment(judgment_id="x")])),
    case("shard-bad-status", FN, "field 'status': expected 'ok', 'unparsed' or 'error', got 'great'", setup=_shard([judgment(status="great")])),
    case("shard-ok-without-scale", FN, "field 'scale_min': an ok judgment needs its scale", setup=_shard([judgment(scale_min=None)])),
    case("shard-missing-columns", FN, "not a judgments shard: column(s)", "missing",
         setup=_shard([{"judgment_id": "0123456789abcdef"}], pa.schema([("judgment_id", pa.string())]))),
]

CASES: list[Case] = GENERATE + JUDGE


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_generate_judge_bad_input(c: Case, base_catalog: Path, tmp_path: Path) -> None:
    run_case(c, base_catalog, tmp_path)
