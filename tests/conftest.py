"""Shared fixtures. Expensive things (a tiny model) are built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
# the real third-party data sits beside the checkout (../shared/data), or where TSO_SHARED_DATA says
SHARED_DATA = Path(os.environ.get("TSO_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real third-party data (read in place, never copied)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"missing {SHARED_DATA}: the real test data must sit beside the checkout "
                    "(../shared/data) or be named by TSO_SHARED_DATA=DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama + trained tokenizer + chat template, saved with save_pretrained."""
    from tso_train.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture()
def catalog(tmp_path: Path):
    """A fresh, empty catalog."""
    from tso_data.catalog import Catalog

    return Catalog.init(tmp_path / "catalog")
