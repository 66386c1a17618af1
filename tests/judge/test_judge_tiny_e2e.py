"""End to end with a real (tiny, random) local judge model through the transformers
backend: its replies are gibberish, so they must be stored as 'unparsed', retried, and
never turned into numbers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tso_data.cli.main import cli
from tso_data.judge.parsing import parse_score
from tso_data.matrix import add_model

pytestmark = pytest.mark.slow


def test_tiny_judge_unparsed_rows_are_retried_and_never_numbers(small_catalog, tiny_model_dir) -> None:
    catalog, ids = small_catalog
    add_model(catalog, "tiny-judge", family="tiny", version="1", size_b=0.0001, path=str(tiny_model_dir))
    args = ["judge", "-c", str(catalog.root), "--judge", "tiny-judge", "--model", "m-base", "--rubric", "logic",
            "--max-tokens", "24", "--json"]
    result = CliRunner().invoke(cli, [*args, "--max-attempts", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    rows = catalog.arrow("SELECT * FROM judgments WHERE judge = 'tiny-judge'").to_pylist()
    assert len(rows) == 6 and summary["planned"] == 6
    assert {r["judge_version"] for r in rows} == {"1"} and {r["rubric"] for r in rows} == {"logic"}
    unparsed = [r for r in rows if r["status"] == "unparsed"]
    assert len(unparsed) >= 4, "a random tiny model should rarely write a valid score"
    for r in rows:
        assert r["status"] in ("ok", "unparsed")
        assert r["raw_text"] is not None
        # the stored status/score is exactly what the parser says about the stored text
        parsed = parse_score(r["raw_text"], 1, 10)
        assert (r["status"], r["score"]) == (parsed.status, parsed.score)
    for r in unparsed:
        assert r["score"] is None and r["attempts"] == 2
    assert summary["calls"] == sum(r["attempts"] for r in rows)
    # a rerun with a higher cap retries only the failed rows, once more each
    result = CliRunner().invoke(cli, [*args, "--max-attempts", "3"], catch_exceptions=False)
    again = json.loads(result.output.strip().splitlines()[-1])
    assert again["already_ok"] == 6 - len(unparsed) and again["calls"] == len(unparsed)
    stored = catalog.arrow("SELECT * FROM judgments WHERE judge = 'tiny-judge'").to_pylist()
    after = {r["judgment_id"]: r for r in stored}
    assert len(after) == 6
    for r in unparsed:
        now = after[r["judgment_id"]]
        assert now["attempts"] == 3
        assert (now["status"] == "ok") == (now["score"] is not None)
    # scores: nothing parsed means no score, never a number standing in for one
    if all(r["status"] != "ok" for r in after.values()):
        out = CliRunner().invoke(cli, ["scores", "-c", str(catalog.root), "--base", "m-base", "--judge", "tiny-judge"])
        assert out.exit_code == 2 and "no scored judgments" in out.output
