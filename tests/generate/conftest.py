"""Fixtures for the generation tests: catalogs with prompts, a stub OpenAI server."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tso_data.catalog import Catalog
from tso_data.generate.stub_server import RunningStub, StubServer
from tso_data.ids import prompt_id
from tso_data.matrix import add_model


def _add_prompts(catalog: Catalog, conversations: Sequence[Sequence[dict[str, str]]], split: str = "train",
                category: str | None = None) -> list[str]:
    """Insert prompts straight into the table (the ingest command belongs to another area)."""
    ids = []
    with catalog.connect(read_only=False) as con:
        for messages in conversations:
            pid = prompt_id(messages)
            n_turns = sum(1 for m in messages if m["role"] == "user")
            con.execute(
                "INSERT INTO prompts (prompt_id, messages, n_turns, source, category, split, added_at) "
                "VALUES (?, ?, ?, 'test', ?, ?, now())",
                [pid, [{"role": m["role"], "content": m["content"]} for m in messages], n_turns, category, split],
            )
            ids.append(pid)
    return ids


def _single_turn(texts: Sequence[str]) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": t}] for t in texts]


@pytest.fixture()
def add_prompts():
    """add_prompts(catalog, conversations, split='train', category=None) -> prompt ids."""
    return _add_prompts


@pytest.fixture()
def single_turn():
    """single_turn(texts) -> one one-user-message conversation per text."""
    return _single_turn


@pytest.fixture()
def stub() -> Iterator[RunningStub]:
    running = StubServer(latency_s=0.0, retry_after=1.0, slow_s=3.0).start_in_thread()
    yield running
    running.stop()


@pytest.fixture()
def stub_catalog(catalog: Catalog, stub: RunningStub) -> Catalog:
    """A catalog with 'stub-v1-1b' served by the stub server and 6 single-turn prompts."""
    add_model(catalog, "stub-v1-1b", family="stub", version="1", size_b=1, endpoint=stub.base_url)
    _add_prompts(catalog, _single_turn([f"question {i}" for i in range(6)]))
    return catalog


@pytest.fixture()
def cli_run():
    """cli_run(*args) -> click Result of `tso-data *args` (stdout and stderr kept apart)."""
    from click.testing import CliRunner

    from tso_data.cli.main import cli

    def run(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return run


@pytest.fixture(scope="session")
def served_tiny_model(tiny_model_dir: Path) -> Iterator[str]:
    """`transformers serve` (a real OpenAI-compatible server) with the tiny model on
    127.0.0.1; yields its base URL. It names the model by its path."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [str(exe), "serve", str(tiny_model_dir), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(base_url + "/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("transformers serve did not become ready in 90 s")
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
