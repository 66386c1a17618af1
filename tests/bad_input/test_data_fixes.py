"""Focused tests of the tso-data half of issue 14 that are not a bad input failing cleanly:
snapshot files verified and never orphaned, rounds, dotted versions, shards under odd
paths, secrets, failed runs, ingest beside readers, generate runs sharing work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog_harness import base_catalog, invoke  # noqa: E402

from tso_data.catalog import Catalog  # noqa: E402
from tso_data.errors import CatalogLockedError  # noqa: E402
from tso_data.generate.stub_server import StubServer  # noqa: E402
from tso_data.shards import merge_shards, write_shard  # noqa: E402

__all__ = ["base_catalog"]


def copy_of(base: Path, tmp_path: Path) -> Path:
    cat = tmp_path / "cat"
    shutil.copytree(base, cat)
    return cat


def ok(*args: str, env: dict[str, str | None] | None = None):
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.output
    return result


# -- snapshots (item 1, 9) ---------------------------------------------------------------


def test_truncated_snapshot_file_is_written_again(base_catalog: Path, tmp_path: Path) -> None:
    cat = copy_of(base_catalog, tmp_path)
    [snapshot] = (cat / "snapshots" / "round-1").glob("*.parquet")
    whole = snapshot.read_bytes()
    snapshot.write_bytes(whole[: len(whole) // 2])
    report = json.loads(ok("build", "--round", "1", "-c", str(cat), "--json").stdout)
    assert report["snapshot_id"] == snapshot.stem and report["created"] is True
    assert any("damaged" in w and "written again" in w for w in report["warnings"])
    assert snapshot.read_bytes() == whole  # content-addressed: the same bytes as the first build
    again = json.loads(ok("build", "--round", "1", "-c", str(cat), "--json").stdout)
    assert again["created"] is False


def test_a_build_that_cannot_record_its_snapshot_leaves_no_file(base_catalog: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cat = copy_of(base_catalog, tmp_path)
    before = sorted(p.name for p in (cat / "snapshots" / "round-1").iterdir())
    real = Catalog.connect

    def locked_for_writers(self: Catalog, read_only: bool = True):
        if not read_only:
            raise CatalogLockedError(f"{self.db_path}: catalog is locked by another process (test)")
        return real(self, read_only)

    monkeypatch.setattr(Catalog, "connect", locked_for_writers)
    result = invoke("build", "--round", "1", "--seed", "7", "-c", str(cat))  # another seed: a new snapshot
    assert result.exit_code == 2 and "locked" in result.stderr
    assert sorted(p.name for p in (cat / "snapshots" / "round-1").iterdir()) == before


def test_seed_2_pow_63_minus_1_builds(base_catalog: Path, tmp_path: Path) -> None:
    cat = copy_of(base_catalog, tmp_path)
    report = json.loads(ok("build", "--round", "1", "--seed", str(2**63 - 1), "-c", str(cat), "--json").stdout)
    assert report["created"] and sum(report["pairs"].values()) > 0


# -- rounds and versions (item 9) ----------------------------------------------------------


def test_round_without_its_own_table_is_warned(base_catalog: Path, tmp_path: Path) -> None:
    cat = copy_of(base_catalog, tmp_path)  # the demo's round.toml has no [round.R] tables
    report = json.loads(ok("build", "--round", "2", "--dry-run", "-c", str(cat), "--json").stdout)
    assert any("has no [round.2] table" in w and "'acme-v2-1b'" in w and "--base-model" in w
               for w in report["warnings"])
    named = json.loads(ok("build", "--round", "2", "--dry-run", "--base-model", "acme-v3-1b", "-c", str(cat),
                          "--json").stdout)
    assert not any("[round.2]" in w for w in named["warnings"])


def _dotted_family(cat: Path) -> None:
    ok("init", str(cat))
    for name, version, size in [("x-2.5-s", "2.5", 1), ("x-3-s", "3", 1), ("x-3.1-s", "3.1", 1),
                                ("x-3.10-s", "v3.10", 1),
                                ("x-3.9-l", "3.9", 7), ("x-v1.3-l", "v1.3", 7)]:
        ok("models", "add", name, "--family", "x", "--version", version, "--size-b", str(size), "-c", str(cat))


def test_dotted_versions_order_natively(tmp_path: Path) -> None:
    from tso_data.pairs.config import load_round_config
    from tso_data.pairs.pools import resolve_pools
    from tso_data.pairs.run import load_models

    cat = tmp_path / "cat"
    _dotted_family(cat)
    config = load_round_config(None, 1, {"base_model": "x-3.1-s"})
    pools = resolve_pools(config, load_models(Catalog.open(cat)))
    assert pools.membership["positive:newest-largest"] == ["x-3.9-l"]  # 3.9 > v1.3 at the largest size
    # older (2.5, 3 < 3.1) or smaller; never 3.10 (newer, same size)
    assert sorted(pools.negative) == ["x-2.5-s", "x-3-s", "x-v1.3-l"]
    grid = ok("models", "list", "-c", str(cat)).stdout
    order = [grid.index(v) for v in ("│ 2.5 ", "│ 3 ", "│ 3.1 ", "│ 3.9 ", "│ v3.10 ")]
    assert order == sorted(order)


def test_a_rule_without_orderable_cells_names_the_versions(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    ok("init", str(cat))
    models = tmp_path / "m.jsonl"
    models.write_text("".join(json.dumps({"name": n, "family": "y", "version": v, "size_b": 1}) + "\n"
                              for n, v in [("y-chat", "chat"), ("y-instruct", "instruct")]), encoding="utf-8")
    ok("models", "import", str(models), "-c", str(cat))
    result = invoke("build", "--round", "1", "--base-model", "y-chat", "--dry-run", "-c", str(cat))
    assert result.exit_code == 2
    assert "y-instruct (version 'instruct' is not orderable: re-add it with --version-order N)" in result.stderr


# -- shards (items 1, 7) -------------------------------------------------------------------


def test_shards_merge_under_a_path_with_an_apostrophe(tmp_path: Path) -> None:
    catalog = Catalog.init(tmp_path / "it's a catalog")
    rows = pa.table({
        "failure_id": ["000000000000000a"], "task": ["generate"], "model": ["m"], "prompt_id": ["p"],
        "error": ["e"], "attempts": pa.array([1], pa.int32()), "created_at": [datetime(2024, 1, 1)],
    })
    write_shard(catalog, "failures", rows)
    assert merge_shards(catalog, "failures") == 1


# -- secrets and failed runs (item 3) ---------------------------------------------------------

KEY = "sk-test-DoNotStoreMe1234567890"


@pytest.fixture()
def served(tmp_path: Path):
    """A catalog with model 'm' behind a stub server and three prompts whose first attempt
    gets a 401 echoing the key (OpenAI's wording), plus human answers to judge."""
    stub = StubServer(latency_s=0.0).start_in_thread()
    cat = tmp_path / "cat"
    ok("init", str(cat))
    ok("models", "add", "m", "--family", "f", "--version", "1", "--size-b", "1", "--endpoint", stub.base_url, "-c",
       str(cat))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"q{i} [[faults:401]]"}) + "\n" for i in range(3)),
                       encoding="utf-8")
    ok("ingest", "prompts", str(prompts), "-c", str(cat))
    answers = tmp_path / "a.jsonl"
    answers.write_text("".join(json.dumps({"id": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(3)),
                       encoding="utf-8")
    ok("ingest", "answers", str(answers), "-c", str(cat))
    yield cat
    stub.stop()


def test_an_echoed_api_key_is_never_stored_or_printed_and_the_run_fails(served: Path) -> None:
    env = {"OPENAI_API_KEY": KEY}
    gen = invoke("generate", "-c", str(served), "--model", "m", "--no-progress", env=env)
    assert gen.exit_code == 2
    line = gen.stderr.strip().splitlines()[-1]
    assert line.startswith("error: generate: authentication failed for 3 of 3 requests") and "[REDACTED]" in line
    errors = [r["error"] for r in Catalog.open(served).arrow("SELECT error FROM failures").to_pylist()]
    assert len(errors) == 3 and all("Incorrect API key provided: [REDACTED]" in e for e in errors)
    judge = invoke("judge", "-c", str(served), "--judge", "m", "--model", "human", "--max-attempts", "1", env=env)
    assert judge.exit_code == 2
    assert judge.stderr.strip().splitlines()[-1].startswith("error: judge m: authentication failed for 3 of 3 requests")
    texts = [r["raw_text"] for r in Catalog.open(served).arrow("SELECT raw_text FROM judgments").to_pylist()]
    assert len(texts) == 3 and all("[REDACTED]" in t for t in texts)
    everything = gen.output + judge.output + "".join(errors) + "".join(texts)
    assert KEY not in everything and KEY not in (served / "catalog.duckdb").read_bytes().decode("latin-1")


def test_every_request_failing_exits_2(served: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p500.jsonl"
    prompts.write_text(json.dumps({"prompt": "always [[faults:500,500,500]]"}) + "\n", encoding="utf-8")
    ok("ingest", "prompts", str(prompts), "-c", str(served))
    result = invoke("generate", "-c", str(served), "--model", "m", "--no-progress", "--max-attempts", "1",
                    "--where", "prompt_id NOT IN (SELECT prompt_id FROM prompts WHERE external_id LIKE 'q%')")
    assert result.exit_code == 2
    assert "error: generate: every request failed (1 of 1; e.g. after 1 attempts: HTTP 500)" in result.stderr


# -- ingest beside readers (item 10) --------------------------------------------------------

READER = ("import duckdb, sys; "
          "duckdb.connect(sys.argv[1], read_only=True).execute('SELECT count(*) FROM prompts').fetchall()")


def test_a_reader_gets_in_while_an_ingest_checks_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tso_data.ingest import kinds

    catalog = Catalog.init(tmp_path / "cat")
    seen: list[int] = []
    prepare_prompts = kinds.PREPARE_BY_KIND["prompts"]

    def checking(job) -> None:  # the checks of the file run now: may another process read?
        seen.append(subprocess.run([sys.executable, "-c", READER, str(catalog.db_path)],
                                   capture_output=True).returncode)
        prepare_prompts(job)

    monkeypatch.setitem(kinds.PREPARE_BY_KIND, "prompts", checking)
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "a question"}) + "\n", encoding="utf-8")
    ok("ingest", "prompts", str(f), "-c", str(catalog.root))
    assert seen == [0]
    assert catalog.scalar("SELECT count(*) FROM prompts") == 1


def test_a_large_ingest_commits_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tso_data import staged_write
    from tso_data.catalog import read_generation

    monkeypatch.setattr(staged_write, "CHUNK_ROWS", 2)
    monkeypatch.setattr(staged_write, "PAUSE_S", 0.0)
    catalog = Catalog.init(tmp_path / "cat")
    with catalog.connect() as con:
        start = read_generation(con)
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(5)), encoding="utf-8")
    report = json.loads(ok("ingest", "prompts", str(f), "-c", str(catalog.root), "--json").stdout)
    assert report["files"][0]["new"] == 5
    with catalog.connect() as con:
        assert read_generation(con) == start + 3  # rows 0-1, 2-3, 4: three write transactions
    assert catalog.scalar("SELECT count(DISTINCT prompt_id) FROM prompts") == 5


class FakeRows:
    def __init__(self, pending: int) -> None:
        self.pending_rows = pending
        self.written: list[tuple[int, int]] = []

    def write_rows(self, start: int, stop: int) -> int:
        self.written.append((start, stop))
        return max(0, min(stop, self.pending_rows) - start)


class FakeStaged:
    """write() says another writer committed on the calls in ``stale_calls``; records
    whether the checks ran again under the write lock or outside it."""

    def __init__(self, stale_calls: set[int]) -> None:
        self.stale_calls, self.calls, self.locked, self.refreshes = stale_calls, 0, False, 0
        self.rechecks_under_lock: list[bool] = []

    @contextmanager
    def write(self) -> Iterator[bool]:
        self.calls += 1
        self.locked = True
        try:
            yield self.calls in self.stale_calls
        finally:
            self.locked = False

    def refresh(self) -> None:
        self.refreshes += 1

    def recheck(self, rows: FakeRows) -> FakeRows:
        self.rechecks_under_lock.append(self.locked)
        return rows


def test_chunks_after_another_writer_are_checked_again_outside_the_lock() -> None:
    from tso_data.staged_write import write_in_chunks

    staged = FakeStaged(stale_calls={2})  # another writer committed before the second chunk
    first, fresh = FakeRows(300_000), FakeRows(177_120)  # after the recheck: what is still missing
    rows, written = write_in_chunks(staged, first, lambda: staged.recheck(fresh))  # type: ignore[arg-type]
    assert rows is fresh and first.written == [(0, 122_880)]
    assert fresh.written[0][0] == 0 and written == 122_880 + 177_120
    assert staged.rechecks_under_lock == [False] and staged.refreshes == 1


def test_a_writer_committing_all_the_time_gets_the_checks_under_the_lock() -> None:
    from tso_data import staged_write

    staged = FakeStaged(stale_calls=set(range(1, 100)))

    def recheck() -> FakeRows:
        return staged.recheck(FakeRows(10))

    rows, written = staged_write.write_in_chunks(staged, FakeRows(10), recheck)  # type: ignore[arg-type]
    assert written == 10 and rows.written == [(0, staged_write.CHUNK_ROWS)]
    assert staged.rechecks_under_lock == [False] * staged_write.STALE_TRIES + [True]


# -- two generate runs of one model (item 10) ---------------------------------------------------


def test_two_generate_runs_of_one_model_never_send_the_same_request(tmp_path: Path) -> None:
    # slow answers while the second run plans (a loaded machine takes seconds for that), fast after
    stub = StubServer(latency_s=1.0).start_in_thread()
    try:
        cat = tmp_path / "cat"
        ok("init", str(cat))
        ok("models", "add", "m", "--family", "f", "--version", "1", "--size-b", "1", "--endpoint", stub.base_url, "-c",
           str(cat))
        prompts = tmp_path / "p.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(24)), encoding="utf-8")
        ok("ingest", "prompts", str(prompts), "-c", str(cat))
        first = subprocess.Popen(
            [sys.executable, "-c", "from tso_data.cli.main import cli; cli()", "generate", "-c", str(cat),
             "--model", "m", "--concurrency", "2", "--client-processes", "1", "--no-progress"],
            env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not stub.server.log:  # the first run has planned, claimed and started sending
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = invoke("generate", "-c", str(cat), "--model", "m", "--no-progress", "--json")
        stub.server.latency_s = 0.05
        assert second.exit_code == 0, second.output
        summary = json.loads(second.stdout.strip().splitlines()[-1])
        assert summary["todo"] == 0 and summary["claimed_by_others"] > 0
        assert first.wait(timeout=120) == 0
        asked = [entry.key for entry in stub.server.log]
        assert len(asked) == len(set(asked)) == 24
        assert Catalog.open(cat).scalar("SELECT count(*) FROM responses") == 24
        assert not list((cat / "claims" / "generate").glob("*.claim"))  # released
    finally:
        stub.stop()
