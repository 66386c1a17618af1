"""Eval-area fixtures. The helpers (eval_helpers) are imported by plain name, so this
directory goes on sys.path (importlib import mode)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_helpers import VerdictStub  # noqa: E402


@pytest.fixture()
def verdict_stub():
    stub = VerdictStub(latency_s=0.0).start_in_thread()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture(scope="session")
def alpaca_eval_metrics():
    """alpaca_eval's own metric functions (the PyPI package, offline). It imports
    ``pkg_resources``, which setuptools >= 81 no longer ships; nothing on the metric path
    uses it, so an empty module stands in while it is imported (and only then: pytest's
    monkeypatch.syspath_prepend would take a lasting stub for the real thing)."""
    stand_in = "pkg_resources" not in sys.modules
    if stand_in:
        sys.modules["pkg_resources"] = types.ModuleType("pkg_resources")
    try:
        from alpaca_eval.metrics import glm_winrate, winrate  # a dev extra (pyproject.toml)
    finally:
        if stand_in:
            del sys.modules["pkg_resources"]

    return types.SimpleNamespace(get_winrate=winrate.get_winrate, glm=glm_winrate)
