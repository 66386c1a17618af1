"""A large ingest writes in chunks (docs/catalog.md, ingest): kill -9 during it leaves whole
chunks and the same ingest run again adds the rest; another writer committing between two
chunks gets the remaining rows checked again, so nothing is stored twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tso_data.catalog import Catalog
from tso_data.ingest import ingest_files

ROWS, CHUNK = 7, 2
# An ingest in chunks of CHUNK rows that stops (sleeps, to be killed) right after the second
# chunk's COMMIT ("between") or inside the third chunk's transaction, after its INSERT ("inside").
CHILD = r"""
import sys, time
from contextlib import contextmanager
from tso_data import staged_write
from tso_data.catalog import Catalog
from tso_data.ingest import ingest_files
where, root, path, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
staged_write.CHUNK_ROWS, staged_write.PAUSE_S = chunk, 0.0
plain_write, commits = staged_write.StagedWrite.write, [0]

@contextmanager
def write(self):
    with plain_write(self) as changed:
        yield changed
        if where == "inside" and commits[0] == 2:
            print("stopped", flush=True)
            time.sleep(60)
    commits[0] += 1
    if where == "between" and commits[0] == 2:
        print("stopped", flush=True)
        time.sleep(60)

staged_write.StagedWrite.write = write
ingest_files(Catalog.open(root), "prompts", [path])
"""


@pytest.mark.parametrize("where", ["between", "inside"])
def test_kill_9_mid_ingest_leaves_whole_chunks_and_a_rerun_adds_the_rest(tmp_path: Path, where: str) -> None:
    catalog = Catalog.init(tmp_path / "cat")
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(ROWS)), encoding="utf-8")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, where, str(catalog.root), str(f), str(CHUNK)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "stopped\n", child.stderr.read() if child.stderr else ""
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    # two committed chunks, whether killed between chunks or inside the third one's transaction
    assert catalog.scalar("SELECT count(*) FROM prompts") == 2 * CHUNK
    report = ingest_files(catalog, "prompts", [f])
    assert report.files[0].new == ROWS - 2 * CHUNK
    texts = sorted(str(r["c"]) for r in catalog.arrow("SELECT messages[1].content AS c FROM prompts").to_pylist())
    assert texts == sorted(f"question {i}" for i in range(ROWS))


def test_a_writer_between_chunks_gets_the_rest_checked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tso_data import staged_write

    catalog = Catalog.init(tmp_path / "cat")
    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    ours.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(ROWS)), encoding="utf-8")
    theirs.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in [*range(ROWS), 99]),
                      encoding="utf-8")
    others: list[int] = []

    def pause(_: float) -> None:  # between two of our chunks, with the lock free, another ingest commits
        if not others:
            others.append(-1)
            others[0] = ingest_files(Catalog.open(catalog.root), "prompts", [theirs]).files[0].new

    monkeypatch.setattr(staged_write, "CHUNK_ROWS", CHUNK)
    monkeypatch.setattr(staged_write, "time", SimpleNamespace(sleep=pause))
    report = ingest_files(catalog, "prompts", [ours])
    assert others == [ROWS - CHUNK + 1]  # all but our first chunk, and one of their own
    assert report.files[0].new == CHUNK  # the rest was theirs by the time of our second chunk
    texts = sorted(str(r["c"]) for r in catalog.arrow("SELECT messages[1].content AS c FROM prompts").to_pylist())
    assert texts == sorted([f"question {i}" for i in range(ROWS)] + ["question 99"])
