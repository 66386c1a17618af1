"""`tso-data generate` end to end against the stub server: resumable and idempotent,
multi-turn answered turn by turn, sharding without duplicates, a kill -9 mid-run, and
every kind of bad input rejected with exit 2 and nothing stored."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tso_data.catalog import Catalog
from tso_data.generate.stub_server import RunningStub, StubServer
from tso_data.matrix import add_model

MODEL = "stub-v1-1b"


def _gen(cli_run, catalog: Catalog, *args: str):
    return cli_run("generate", "-c", str(catalog.root), "--model", MODEL, "--no-progress", "--max-tokens", "16",
                   "--retry-delay", "0.05", *args)


def _counts(catalog: Catalog) -> Counter:
    return Counter(catalog.arrow("SELECT prompt_id FROM responses").column(0).to_pylist())


def test_rerun_is_idempotent_and_n_grows(cli_run, stub_catalog: Catalog) -> None:
    prompts = stub_catalog.arrow("SELECT prompt_id FROM prompts").column(0).to_pylist()
    first = _gen(cli_run, stub_catalog, "--n", "2", "--seed", "43", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1])["responses_written"] == 12
    assert _counts(stub_catalog) == Counter({p: 2 for p in prompts})

    again = _gen(cli_run, stub_catalog, "--n", "2", "--seed", "43", "--json")
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {
        "model": MODEL, "backend": "openai", "prompts": 6, "already_done": 12, "todo": 0}
    assert _counts(stub_catalog) == Counter({p: 2 for p in prompts})

    more = _gen(cli_run, stub_catalog, "--n", "3", "--seed", "43", "--json")
    assert json.loads(more.stdout.strip().splitlines()[-1])["responses_written"] == 6  # only sample index 2
    assert _counts(stub_catalog) == Counter({p: 3 for p in prompts})

    # other sampling parameters are other responses, recorded as such
    _gen(cli_run, stub_catalog, "--temperature", "0")
    sampling = stub_catalog.arrow("SELECT sampling, count(*) AS n FROM responses GROUP BY 1 ORDER BY 1").to_pylist()
    assert sampling == [
        {"sampling": '{"max_tokens":16,"seed":43,"temperature":0.7,"top_p":0.9}', "n": 18},
        {"sampling": '{"max_tokens":16,"seed":null,"temperature":0.0,"top_p":0.9}', "n": 6},
    ]
    assert stub_catalog.scalar("SELECT count(DISTINCT response_id) FROM responses") == 24


def test_where_and_split_select_prompts(cli_run, catalog: Catalog, stub: RunningStub, add_prompts,
                                        single_turn) -> None:
    add_model(catalog, MODEL, family="stub", version="1", size_b=1, endpoint=stub.base_url)
    math = add_prompts(catalog, single_turn(["1+1", "2+2"]), category="math")
    add_prompts(catalog, single_turn(["poem"]), category="writing")
    held = add_prompts(catalog, single_turn(["held 1+1"]), split="heldout", category="math")
    assert _gen(cli_run, catalog, "--where", "category = 'math'", "--split", "train").exit_code == 0
    assert set(_counts(catalog)) == set(math)
    assert _gen(cli_run, catalog, "--split", "heldout").exit_code == 0
    assert set(_counts(catalog)) == set(math) | set(held)


def test_multi_turn_prompts_are_answered_turn_by_turn(cli_run, catalog: Catalog, stub: RunningStub,
                                                       add_prompts) -> None:
    add_model(catalog, MODEL, family="stub", version="1", size_b=1, endpoint=stub.base_url)
    system = {"role": "system", "content": "You are terse."}
    conversations = [
        [system, {"role": "user", "content": f"first {i}"}, {"role": "user", "content": f"second {i}"}]
        for i in range(3)
    ] + [[{"role": "user", "content": "only turn"}]]
    add_prompts(catalog, conversations)
    assert _gen(cli_run, catalog, "--n", "2").exit_code == 0

    rows = catalog.arrow("SELECT r.turns, p.messages FROM responses r JOIN prompts p USING (prompt_id)").to_pylist()
    assert len(rows) == 8
    turn2_requests = [e.messages for e in stub.server.log if e.key.startswith("second")]
    assert len(turn2_requests) == 6
    for row in rows:
        user_turns = [m for m in row["messages"] if m["role"] == "user"]
        assert len(row["turns"]) == len(user_turns)
        if len(user_turns) == 2:
            # the turn-2 request carried the model's own turn-1 answer, after the same context
            expected = [system, user_turns[0], {"role": "assistant", "content": row["turns"][0]}, user_turns[1]]
            assert expected in turn2_requests
            assert row["turns"][1] == f"answer 2 to: {user_turns[1]['content']}"


def test_shards_partition_prompts_and_merge_without_duplicates(cli_run, catalog: Catalog, stub: RunningStub,
                                                                add_prompts, single_turn) -> None:
    add_model(catalog, MODEL, family="stub", version="1", size_b=1, endpoint=stub.base_url)
    prompts = add_prompts(catalog, single_turn([f"q{i}" for i in range(30)]))
    seen: list[set[str]] = []
    for i in range(3):
        result = _gen(cli_run, catalog, "--shard", f"{i}/3", "--n", "2", "--no-merge")
        assert result.exit_code == 0, result.output
        assert catalog.scalar("SELECT count(*) FROM responses") == 0  # workers only wrote shards
        shard_keys = {e.key for e in stub.server.log} - set().union(*seen) if seen else {e.key for e in stub.server.log}
        seen.append(shard_keys)
    assert all(seen) and sum(len(s) for s in seen) == 30  # disjoint, non-empty, covering
    # a worker rerun now sees the pending shards and asks for nothing
    again = _gen(cli_run, catalog, "--shard", "1/3", "--n", "2", "--no-merge", "--json")
    assert json.loads(again.stdout.strip().splitlines()[-1])["todo"] == 0
    merged = cli_run("generate", "-c", str(catalog.root), "--merge-only", "--json")
    assert json.loads(merged.stdout)["merged_responses"] == 60
    assert _counts(catalog) == Counter({p: 2 for p in prompts})
    assert not list(catalog.shards_dir("responses").glob("*.parquet"))


@pytest.mark.parametrize("client_processes", [1, 2])
def test_kill_9_mid_run_then_rerun_gives_exactly_n(catalog: Catalog, add_prompts, single_turn,
                                                   cli_run, client_processes: int) -> None:
    slow = StubServer(latency_s=0.1).start_in_thread()
    try:
        add_model(catalog, MODEL, family="stub", version="1", size_b=1, endpoint=slow.base_url)
        prompts = add_prompts(catalog, single_turn([f"q{i}" for i in range(80)]))
        cmd = [sys.executable, "-c", "from tso_data.cli.main import cli; cli()", "generate", "-c", str(catalog.root),
               "--model", MODEL, "--n", "2", "--concurrency", "4", "--flush-every", "4", "--no-progress",
               "--client-processes", str(client_processes)]
        proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        shards = catalog.shards_dir("responses")
        deadline = time.monotonic() + 60
        while len(list(shards.glob("*.parquet"))) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no shards written"
            time.sleep(0.05)
        workers = psutil.Process(proc.pid).children()
        assert len(workers) >= (client_processes if client_processes > 1 else 0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # the client processes notice their parent is gone and exit: no orphans left running
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        # whole shards only: every visible shard reads back (a write cut short stays a hidden .tmp)
        kept = list(shards.glob("*.parquet"))
        assert len(kept) >= 3 and all(pq.read_table(p).num_rows > 0 for p in kept)

        rerun = _gen(cli_run, catalog, "--n", "2", "--json", "--max-tokens", "2048")
        assert rerun.exit_code == 0, rerun.output
        summary = json.loads(rerun.stdout.strip().splitlines()[-1])
        assert 0 < summary["already_done"] < 160 and summary["already_done"] + summary["responses_written"] == 160
        assert _counts(catalog) == Counter({p: 2 for p in prompts})
        assert catalog.scalar("SELECT count(DISTINCT response_id) FROM responses") == 160
    finally:
        slow.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nothing_stored(catalog: Catalog) -> bool:
    return (catalog.scalar("SELECT count(*) FROM responses") == 0
            and catalog.scalar("SELECT count(*) FROM failures") == 0
            and not list(catalog.root.glob("shards/*/*.parquet")))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "-0.1"], "--temperature must be >= 0"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--max-tokens", "0"], "--max-tokens must be >= 1"),
        (["--n", "0"], "--n must be >= 1"),
        (["--shard", "3/3"], "--shard '3/3'"),
        (["--shard", "x"], "--shard 'x'"),
        (["--concurrency", "0"], "--concurrency must be >= 1"),
        (["--where", "category = 'nothing'"], "no prompts match"),
        (["--where", "no_such_column = 1"], "--where 'no_such_column = 1'"),
        (["--api-key-env", "TSO_TEST_MISSING_KEY"], "environment variable TSO_TEST_MISSING_KEY is not set"),
        (["--backend", "transformers"], "needs a local path"),
    ],
)
def test_bad_input_exits_2_and_stores_nothing(cli_run, stub_catalog: Catalog, args: list[str], message: str) -> None:
    result = _gen(cli_run, stub_catalog, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert _nothing_stored(stub_catalog)


def test_bad_models_exit_2(cli_run, stub_catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = cli_run("generate", "-c", str(stub_catalog.root), "--model", "nope")
    assert unknown.exit_code == 2 and "unknown model 'nope'" in unknown.output
    add_model(stub_catalog, "bare-v1-1b", family="bare", version="1", size_b=1)
    bare = cli_run("generate", "-c", str(stub_catalog.root), "--model", "bare-v1-1b")
    assert bare.exit_code == 2 and "neither a path nor an endpoint" in bare.output
    add_model(stub_catalog, "hosted-v1-1b", family="h", version="1", size_b=1, endpoint="https://api.example.com/v1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    hosted = cli_run("generate", "-c", str(stub_catalog.root), "--model", "hosted-v1-1b")
    assert hosted.exit_code == 2 and "environment variable OPENAI_API_KEY is not set" in hosted.output
    assert _nothing_stored(stub_catalog)


def test_unreachable_endpoint_fails_clearly_after_retries(cli_run, catalog: Catalog, add_prompts,
                                                          single_turn) -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    add_model(catalog, MODEL, family="stub", version="1", size_b=1, endpoint=url)
    add_prompts(catalog, single_turn(["q"]))
    start = time.monotonic()
    result = _gen(cli_run, catalog, "--max-attempts", "3")
    assert result.exit_code == 2
    assert f"endpoint {url} unreachable after 3 attempts" in result.output
    assert time.monotonic() - start >= 0.05 + 0.1 / 2  # it did back off between the attempts
    assert _nothing_stored(catalog)


def test_api_key_is_sent_but_never_printed(cli_run, stub_catalog: Catalog, stub: RunningStub,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-do-not-print-4242"
    monkeypatch.setenv("MY_KEY", secret)
    result = _gen(cli_run, stub_catalog, "--api-key-env", "MY_KEY")
    assert result.exit_code == 0
    assert secret not in result.output
    assert {e.authorization for e in stub.server.log} == {f"Bearer {secret}"}
    dump = " ".join(str(v) for row in stub_catalog.arrow("SELECT * FROM responses").to_pylist() for v in row.values())
    assert secret not in dump
    assert not any(secret.encode() in p.read_bytes() for p in Path(stub_catalog.root).rglob("*") if p.is_file())
