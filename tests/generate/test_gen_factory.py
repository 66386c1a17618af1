"""Choosing a backend for a model row, and the API key rules."""

from __future__ import annotations

import pytest

from tso_data.errors import TSODataError
from tso_data.generate import get_backend
from tso_data.generate.factory import BackendOptions, resolve_api_key, resolve_backend_name
from tso_data.matrix import ModelInfo


def _model(path: str | None = None, endpoint: str | None = None, backend: str | None = None,
           kind: str = "model") -> ModelInfo:
    return ModelInfo("m", kind, "f", "1", 1, 1.0, path, endpoint, backend, None)


def test_backend_inference_follows_the_model_row() -> None:
    assert resolve_backend_name(_model(path="/w"), None) == "transformers"
    assert resolve_backend_name(_model(endpoint="http://h/v1"), None) == "openai"
    assert resolve_backend_name(_model(path="/w", endpoint="http://h/v1"), None) == "transformers"
    assert resolve_backend_name(_model(path="/w", backend="vllm"), None) == "vllm"
    assert resolve_backend_name(_model(path="/w", endpoint="http://h/v1", backend="vllm"), "openai") == "openai"
    with pytest.raises(TSODataError, match="neither a path nor an endpoint"):
        resolve_backend_name(_model(), None)
    with pytest.raises(TSODataError, match="human source"):
        resolve_backend_name(_model(kind="human"), None)
    with pytest.raises(TSODataError, match="needs an endpoint"):
        resolve_backend_name(_model(path="/w"), "openai")


def test_api_key_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert resolve_api_key("http://127.0.0.1:8000/v1", BackendOptions()) is None  # local server, no key needed
    assert resolve_api_key("http://localhost:8000/v1", BackendOptions()) is None
    with pytest.raises(TSODataError, match="OPENAI_API_KEY is not set"):
        resolve_api_key("https://api.example.com/v1", BackendOptions())
    with pytest.raises(TSODataError, match="MY_KEY is not set"):
        resolve_api_key("http://127.0.0.1:8000/v1", BackendOptions(api_key_env="MY_KEY"))
    assert resolve_api_key("https://api.example.com/v1", BackendOptions(no_api_key=True)) is None
    monkeypatch.setenv("MY_KEY", "k")
    assert resolve_api_key("https://api.example.com/v1", BackendOptions(api_key_env="MY_KEY")) == "k"


def test_backend_keyword_overrides_the_options() -> None:
    # the judge's call: get_backend(info, backend=...)
    backend = get_backend(_model(path="/w", endpoint="http://127.0.0.1:9/v1"), backend="openai")
    assert backend.name == "openai"
    assert backend.settings.model == "/w"  # served name defaults to the path
    assert get_backend(_model(endpoint="http://127.0.0.1:9/v1"), BackendOptions(served_model="x")).settings.model == "x"
