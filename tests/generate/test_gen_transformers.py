"""The transformers backend on the session's tiny model, loaded by path exactly like a
real checkpoint: left-padded batches give the same greedy text as one-by-one generation,
finish reasons and token counts are right, seeds make sampling reproducible, and
`tso-data generate` stores the responses."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from tso_data.catalog import Catalog
from tso_data.generate.backend import Request, Result, SamplingParams
from tso_data.generate.factory import BackendOptions, get_backend
from tso_data.generate.job import run_generation
from tso_data.generate.plan import GenerateSpec, plan_generation
from tso_data.generate.transformers_backend import TransformersBackend, TransformersSettings
from tso_data.matrix import add_model

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a short poem about the sea, with waves that roll in and out."}],
]


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(TransformersSettings(path=str(tiny_model_dir), device="cpu", batch_size=3))


def _requests(params: SamplingParams) -> list[Request]:
    return [Request(f"r{i}", conv, params) for i, conv in enumerate(CONVERSATIONS)]


def test_left_padded_batch_matches_one_by_one_greedy(backend: TransformersBackend, tiny_model_dir: Path) -> None:
    results = list(backend.run(_requests(SamplingParams(temperature=0.0, max_tokens=6))))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for conv, result in zip(CONVERSATIONS, results):
        ids = tokenizer.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        eos = tokenizer.eos_token_id
        expected = new[: new.index(eos)] if eos in new else new
        assert result.text == tokenizer.decode(expected, skip_special_tokens=True)
        assert result.prompt_tokens == ids["input_ids"].shape[1]
        assert result.finish_reason == ("stop" if eos in new else "length")


def test_length_and_stop_finish_reasons(backend: TransformersBackend, tiny_model_dir: Path, tmp_path: Path) -> None:
    greedy = list(backend.run(_requests(SamplingParams(temperature=0.0, max_tokens=3))))
    assert all(r.finish_reason == "length" and r.completion_tokens == 3 for r in greedy)
    # A copy whose end-of-sequence token is the one greedy decoding emits first: it stops at once.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    first_token = tokenizer(greedy[0].text, add_special_tokens=False)["input_ids"][0]
    stopping = tmp_path / "stopping"
    shutil.copytree(tiny_model_dir, stopping)
    config = GenerationConfig.from_pretrained(stopping)
    config.eos_token_id = [tokenizer.eos_token_id, first_token]
    config.save_pretrained(stopping)
    stopper = TransformersBackend(TransformersSettings(path=str(stopping), device="cpu"))
    [first] = stopper.run(_requests(SamplingParams(temperature=0.0, max_tokens=5))[:1])
    assert (first.text, first.finish_reason, first.completion_tokens) == ("", "stop", 1)


def test_seeded_sampling_is_reproducible(backend: TransformersBackend) -> None:
    def texts(seed: int, temperature: float = 1.0) -> list[str | None]:
        return [r.text for r in backend.run(_requests(SamplingParams(temperature=temperature, top_p=1.0,
                                                                     max_tokens=8, seed=seed)))]

    assert texts(1) == texts(1)
    assert texts(1) != texts(2)
    greedy = [r.text for r in backend.run(_requests(SamplingParams(temperature=0.0, max_tokens=8)))]
    assert texts(1) != greedy  # temperature is honoured: sampling is not greedy


class Recording:
    """Wraps a backend and keeps every request it was asked."""

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.requests: list[Request] = []

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        requests = list(requests)
        self.requests += requests
        return self.inner.run(requests)

    def close(self) -> None:
        self.inner.close()


def test_multi_turn_context_holds_the_models_own_answer(backend: TransformersBackend, catalog: Catalog,
                                                        tiny_model_dir: Path, add_prompts) -> None:
    add_model(catalog, "tiny-v1-0.001b", family="tiny", version="1", size_b=0.001, path=str(tiny_model_dir))
    add_prompts(catalog, [[{"role": "user", "content": "Add 2 and 3."}, {"role": "user", "content": "Now double it."}]])
    recording = Recording(backend)
    spec = GenerateSpec(model="tiny-v1-0.001b", params=SamplingParams(max_tokens=5, seed=3), n=2)
    run_generation(catalog, plan_generation(catalog, spec), recording, progress=False)
    rows = catalog.arrow("SELECT turns FROM responses").column(0).to_pylist()
    assert len(rows) == 2 and all(len(turns) == 2 for turns in rows)
    second_turns = [r.messages for r in recording.requests if len(r.messages) == 3]
    assert len(second_turns) == 2
    for turns in rows:
        assert [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": turns[0]},
                {"role": "user", "content": "Now double it."}] in second_turns


def test_generate_cli_with_a_local_model(cli_run, catalog: Catalog, tiny_model_dir: Path, add_prompts) -> None:
    add_model(catalog, "tiny-v1-0.001b", family="tiny", version="1", size_b=0.001, path=str(tiny_model_dir))
    prompt_ids = add_prompts(catalog, CONVERSATIONS)
    result = cli_run("generate", "-c", str(catalog.root), "--model", "tiny-v1-0.001b", "--n", "2", "--max-tokens",
                     "4", "--seed", "43", "--batch-size", "4", "--device", "cpu", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["backend"] == "transformers" and summary["responses_written"] == 6
    rows = catalog.arrow("SELECT * FROM responses").to_pylist()
    assert Counter(r["prompt_id"] for r in rows) == Counter({p: 2 for p in prompt_ids})
    for row in rows:
        assert row["backend"] == "transformers" and row["model"] == "tiny-v1-0.001b"
        assert json.loads(row["sampling"]) == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 4, "seed": 43}
        assert 1 <= row["completion_tokens"] <= 4 and row["prompt_tokens"] > 0
        assert row["finish_reason"] in ("stop", "length") and row["latency_s"] > 0


def test_get_backend_infers_transformers_from_a_path(tiny_model_dir: Path) -> None:
    from tso_data.matrix import ModelInfo

    model = ModelInfo("m", "model", "f", "1", 1, 0.001, str(tiny_model_dir), None, None, None)
    assert get_backend(model, BackendOptions(device="cpu")).name == "transformers"
