"""`tso-data judge` with a judge model served over an OpenAI-compatible endpoint (the stub
server), through the real openai backend: --concurrency and --client-processes reach it,
every judgment is asked exactly once per attempt, replies without a score stay unparsed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tso_data.cli.main import cli
from tso_data.generate.stub_server import StubServer
from tso_data.matrix import add_model


@pytest.mark.parametrize("client_processes", ["1", "2"])
def test_judge_over_an_endpoint_asks_each_judgment_once_per_attempt(small_catalog, client_processes: str) -> None:
    catalog, _ = small_catalog
    stub = StubServer(latency_s=0.0).start_in_thread()
    try:
        add_model(catalog, "api-judge", family="api", version="1", size_b=1.0, endpoint=stub.base_url)
        result = CliRunner().invoke(cli, ["judge", "-c", str(catalog.root), "--judge", "api-judge", "--model", "m-base",
                                          "--max-attempts", "2", "--concurrency", "4", "--client-processes",
                                          client_processes, "--json"], catch_exceptions=False)
    finally:
        stub.stop()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    stored = catalog.arrow("SELECT judgment_id, status, score, raw_text, attempts FROM judgments "
                           "WHERE judge = 'api-judge'").to_pylist()
    assert len(stored) == summary["planned"] > 0
    # the stub's reply has no "Score:" line: unparsed, raw text kept, score NULL, both attempts used
    assert all(r["status"] == "unparsed" and r["score"] is None and r["attempts"] == 2 for r in stored)
    assert all(r["raw_text"].startswith("answer 1 to: ") for r in stored)
    assert summary["calls"] == 2 * len(stored) == len(stub.server.log)
    assert {e.params["max_tokens"] for e in stub.server.log} == {1024}  # the judge's sampling reached it


def test_judge_rejects_a_bad_concurrency(small_catalog) -> None:
    catalog, _ = small_catalog
    add_model(catalog, "api-judge", family="api", version="1", size_b=1.0, endpoint="http://127.0.0.1:9/v1")
    result = CliRunner().invoke(cli, ["judge", "-c", str(catalog.root), "--judge", "api-judge", "--model", "m-base",
                                      "--concurrency", "0"])
    assert result.exit_code == 2 and "--concurrency must be > 0" in result.output
    assert catalog.scalar("SELECT count(*) FROM judgments") == 0
