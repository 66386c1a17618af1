"""The vLLM backend on CPU, with a fake ``vllm`` module standing in for the engine: the
requests it builds (conversations, one SamplingParams each) and how it reads outputs."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest

from tso_data.errors import TSODataError
from tso_data.generate.backend import Request, SamplingParams
from tso_data.generate.factory import BackendOptions, get_backend
from tso_data.matrix import ModelInfo


@dataclass
class FakeSamplingParams:
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None


class FakeLLM:
    instances: list[FakeLLM] = []

    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[list, list]] = []
        FakeLLM.instances.append(self)

    def chat(self, conversations, sampling_params, use_tqdm=True):
        self.calls.append((conversations, sampling_params))
        outputs = []
        for conv, sp in zip(conversations, sampling_params):
            text = f"reply to {conv[-1]['content']}"
            finish = "length" if sp.max_tokens <= 3 else "stop"
            completion = types.SimpleNamespace(text=text, token_ids=list(range(min(4, sp.max_tokens))),
                                               finish_reason=finish)
            outputs.append(types.SimpleNamespace(prompt_token_ids=[1] * len(conv), outputs=[completion]))
        return outputs


@pytest.fixture()
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


MODEL = ModelInfo("acme-v2-70b", "model", "acme", "2", 2, 70.0, "/models/acme-70b", None, "vllm", None)


def test_requests_become_chat_calls_with_per_request_params(fake_vllm: types.ModuleType) -> None:
    backend = get_backend(MODEL, BackendOptions(tensor_parallel_size=4, batch_size=2, dtype="bfloat16"))
    assert backend.name == "vllm"
    llm = FakeLLM.instances[0]
    assert llm.kwargs["model"] == "/models/acme-70b"
    assert llm.kwargs["tensor_parallel_size"] == 4
    assert llm.kwargs["dtype"] == "bfloat16"
    requests = [
        Request(f"r{i}", [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"}],
                SamplingParams(temperature=0.7, top_p=0.9, max_tokens=2 if i == 2 else 64, seed=100 + i))
        for i in range(3)
    ]
    results = list(backend.run(requests))
    assert [len(c[0]) for c in llm.calls] == [2, 1]  # chunks of batch_size
    conversations = llm.calls[0][0] + llm.calls[1][0]
    params = llm.calls[0][1] + llm.calls[1][1]
    assert conversations[1] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q1"}]
    assert [p.seed for p in params] == [100, 101, 102]
    assert all(p.n == 1 and p.temperature == 0.7 and p.top_p == 0.9 for p in params)
    assert [p.max_tokens for p in params] == [64, 64, 2]
    assert [r.key for r in results] == ["r0", "r1", "r2"]
    assert results[0].text == "reply to q0"
    assert (results[0].prompt_tokens, results[0].completion_tokens) == (2, 4)
    assert [r.finish_reason for r in results] == ["stop", "stop", "length"]


def test_missing_vllm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails
    with pytest.raises(TSODataError, match=r"pip install 'tso-data\[vllm\]'"):
        get_backend(MODEL, BackendOptions())


def test_vllm_needs_a_path(fake_vllm: types.ModuleType) -> None:
    served = ModelInfo("hosted", "model", "acme", "2", 2, 70.0, None, "http://x/v1", None, None)
    with pytest.raises(TSODataError, match="needs a local path"):
        get_backend(served, BackendOptions(backend="vllm"))
