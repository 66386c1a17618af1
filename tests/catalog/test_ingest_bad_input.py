"""Bad input: one clear line naming file, line and field; exit status 2; nothing of the
file written and what was there before intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tso_data.catalog import Catalog

TABLES = ("models", "prompts", "answers", "responses", "judgments", "feedback")


@pytest.fixture()
def seeded(tmp_path: Path, cli_run) -> Catalog:
    """A catalog with one model, two prompts and one response."""
    root = tmp_path / "cat"
    cli_run("init", str(root))
    cli_run("models", "add", "m-v1-7b", "--family", "m", "--version", "1", "--size-b", "7", "-c", str(root))
    write_jsonl(tmp_path / "p.jsonl",
                [{"id": "q1", "prompt": "What is 2+2?"}, {"id": "q2", "prompt": "Name a colour."}])
    cli_run("ingest", "prompts", str(tmp_path / "p.jsonl"), "-c", str(root))
    write_jsonl(tmp_path / "r.jsonl", [{"prompt_id": "q1", "model": "m-v1-7b", "response": "4"}])
    cli_run("ingest", "responses", str(tmp_path / "r.jsonl"), "-c", str(root))
    return Catalog.open(root)


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def snapshot(catalog: Catalog) -> dict[str, list[tuple[object, ...]]]:
    out = {}
    with catalog.connect() as con:
        for t in TABLES:
            out[t] = sorted(map(str, con.execute(f"SELECT * FROM {t}").fetchall()))
    return out


def fails(cli_run, catalog: Catalog, *args: str) -> str:
    """Run a command that must fail cleanly; return its one error line."""
    before = snapshot(catalog)
    result = cli_run(*args, "-c", str(catalog.root), ok=False)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert snapshot(catalog) == before
    return lines[0]


def test_malformed_json_line(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "a", "prompt": "fine"}\n{"id": "b", "prompt": "fine too"}\n{"id": "c", "prompt": \n',
                 encoding="utf-8")
    line = fails(cli_run, seeded, "ingest", "prompts", str(f))
    assert f"{f}:3: malformed JSON" in line


def test_missing_required_field(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    f = write_jsonl(tmp_path / "r2.jsonl", [
        {"prompt_id": "q2", "model": "m-v1-7b", "response": "blue"},
        {"prompt_id": "q2", "response": "red", "model": None},
    ])
    line = fails(cli_run, seeded, "ingest", "responses", str(f))
    assert f"{f}:2: field 'model': missing value" in line
    g = write_jsonl(tmp_path / "r3.jsonl", [{"prompt_id": "q2", "response": "blue"}])
    line = fails(cli_run, seeded, "ingest", "responses", str(g))
    assert f"{g}:1: field 'model': missing" in line and "--model" in line


def test_wrong_type(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    f = write_jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": "hello there"},
    ])
    line = fails(cli_run, seeded, "ingest", "prompts", str(f))
    assert f"{f}:2: field 'messages': expected a list of {{role, content}} messages, got a string" in line


def test_wrong_type_in_parquet_column(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "r.parquet"
    pq.write_table(pa.table({"prompt_id": ["q1", "q2"], "model": ["m-v1-7b"] * 2, "response": [None, 3.5]}), f)
    line = fails(cli_run, seeded, "ingest", "responses", str(f))
    assert f"{f}:2: field 'response': expected a string or a list of strings, got column type DOUBLE" in line


def test_empty_prompt(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    f = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "ok"}, {"prompt": "   "}])
    line = fails(cli_run, seeded, "ingest", "prompts", str(f))
    assert f"{f}:2: field 'prompt': empty prompt" in line


def test_non_utf8_bytes(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
    line = fails(cli_run, seeded, "ingest", "prompts", str(f))
    assert f"{f}:2: not valid UTF-8 (byte 0xe9)" in line


def test_unknown_model(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    f = write_jsonl(tmp_path / "u.jsonl", [
        {"prompt_id": "q2", "model": "m-v1-7b", "response": "blue"},
        {"prompt_id": "q2", "model": "nope-13b", "response": "red", "sample_index": 1},
    ])
    line = fails(cli_run, seeded, "ingest", "responses", str(f))
    assert f"{f}:2: field 'model': unknown model 'nope-13b'" in line and "models add" in line


def test_unknown_prompt_reference(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    f = write_jsonl(tmp_path / "u.jsonl", [{"prompt_id": "q9", "model": "m-v1-7b", "response": "x"}])
    line = fails(cli_run, seeded, "ingest", "responses", str(f))
    assert f"{f}:1: field 'prompt_id': no prompt with prompt_id or external id 'q9'" in line


def test_same_id_different_content(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    # in the catalog already: q1 / m-v1-7b / sample 0 says "4"
    f = write_jsonl(tmp_path / "c.jsonl", [
        {"prompt_id": "q2", "model": "m-v1-7b", "response": "blue"},
        {"prompt_id": "q1", "model": "m-v1-7b", "response": "five"},
    ])
    line = fails(cli_run, seeded, "ingest", "responses", str(f))
    assert f"{f}:2: field 'response_id':" in line and "already holds" in line and "different content" in line
    # twice inside one file
    g = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt_id": "q2", "model": "m-v1-7b", "response": "blue"},
        {"prompt_id": "q2", "model": "m-v1-7b", "response": "green"},
    ])
    line = fails(cli_run, seeded, "ingest", "responses", str(g))
    assert f"{g}:2: field 'response_id':" in line and "as line/row 1 but different content" in line
    assert "sample_index" in line


def test_missing_file(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    line = fails(cli_run, seeded, "ingest", "prompts", str(tmp_path / "nope.jsonl"))
    assert line == f"error: {tmp_path / 'nope.jsonl'}: file not found"


def test_locked_catalog(seeded: Catalog, tmp_path: Path, cli_run, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "a new prompt"}])
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb,time; c=duckdb.connect({str(seeded.db_path)!r}); print('x', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline()
        monkeypatch.setenv("TSO_LOCK_TIMEOUT_S", "0.3")
        result = cli_run("ingest", "prompts", str(f), "-c", str(seeded.root), ok=False)
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "catalog is locked by another process" in lines[0]
        assert str(seeded.db_path) in lines[0]
    finally:
        holder.kill()
        holder.wait()
    assert seeded.scalar("SELECT count(*) FROM prompts") == 2


def test_earlier_files_stay_committed_when_a_later_one_fails(seeded: Catalog, tmp_path: Path, cli_run) -> None:
    good = write_jsonl(tmp_path / "g.jsonl", [{"prompt": "brand new"}])
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "also new"}, {"prompt": ""}])
    result = cli_run("ingest", "prompts", str(good), str(bad), "-c", str(seeded.root), ok=False)
    assert result.exit_code == 2 and f"{bad}:2: field 'prompt': empty prompt" in result.output
    texts = [r["c"] for r in seeded.arrow("SELECT messages[1].content AS c FROM prompts").to_pylist()]
    assert "brand new" in texts and "also new" not in texts
