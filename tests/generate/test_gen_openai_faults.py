"""The openai backend against the fault-injecting stub server: retries on 429 (after the
server's Retry-After), 5xx, timeouts, malformed bodies and dropped connections; nothing
lost or duplicated; failures recorded, retried next run and cleared on success."""

from __future__ import annotations

from collections import Counter

import pytest

from tso_data.catalog import Catalog
from tso_data.generate.backend import SamplingParams
from tso_data.generate.factory import BackendOptions, get_backend
from tso_data.generate.job import run_generation
from tso_data.generate.plan import GenerateSpec, plan_generation
from tso_data.generate.stub_server import RunningStub
from tso_data.matrix import add_model, get_model

FAST_RETRY = dict(request_timeout_s=1.0, retry_base_delay_s=0.05, retry_max_delay_s=0.2, seed=0)


def _generate(catalog: Catalog, model: str, max_attempts: int, n: int = 1, client_processes: int = 1):
    spec = GenerateSpec(model=model, params=SamplingParams(max_tokens=16), n=n)
    backend = get_backend(get_model(catalog, model), BackendOptions(concurrency=8, max_attempts=max_attempts,
                                                                     client_processes=client_processes,
                                                                     **FAST_RETRY))
    plan = plan_generation(catalog, spec)
    try:
        return run_generation(catalog, plan, backend, flush_every=3, flush_seconds=5, progress=False)
    finally:
        backend.close()


# 2 client processes: the same guarantees when requests are spread over processes
@pytest.mark.parametrize("client_processes", [1, 2])
def test_every_fault_is_retried_and_nothing_is_lost_or_duplicated(catalog: Catalog, stub: RunningStub, add_prompts,
                                                                  single_turn, client_processes: int) -> None:
    add_model(catalog, "stub-v1-1b", family="stub", version="1", size_b=1, endpoint=stub.base_url)
    faults = {"a": "429", "b": "500,503", "c": "slow", "d": "malformed", "e": "nochoices", "f": "drop",
              "g": "429,500,malformed"}
    texts = [f"[[faults:{f}]] {k}" for k, f in faults.items()] + [f"plain {i}" for i in range(10)]
    prompt_ids = add_prompts(catalog, single_turn(texts))

    result = _generate(catalog, "stub-v1-1b", max_attempts=5, client_processes=client_processes)

    rows = catalog.arrow("SELECT prompt_id, turns, finish_reason, prompt_tokens, completion_tokens, backend "
                         "FROM responses").to_pylist()
    assert Counter(r["prompt_id"] for r in rows) == Counter(prompt_ids)
    assert catalog.scalar("SELECT count(*) FROM failures") == 0
    by_prompt = {r["prompt_id"]: r for r in rows}
    for pid, text in zip(prompt_ids, texts):
        assert by_prompt[pid]["turns"] == [f"answer 1 to: {text[:40]}"]
        assert by_prompt[pid]["finish_reason"] == "stop"
        assert by_prompt[pid]["backend"] == "openai"
        assert by_prompt[pid]["completion_tokens"] > 0

    log = stub.server.log
    attempts = Counter(entry.key for entry in log if entry.key.startswith("[[faults"))
    assert attempts == Counter({t: len(f.split(",")) + 1 for t, f in zip(texts, faults.values())})
    assert result.run.retries == sum(len(f.split(",")) for f in faults.values())
    # the 429 answer said Retry-After: 1 -> the retry came at least 1 s later
    for key in (texts[0], texts[6]):
        tries = sorted(e.at for e in log if e.key == key)
        assert tries[1] - tries[0] >= 1.0
    # the slow answer (3 s) was abandoned at the 1 s timeout and retried
    slow = sorted(e.at for e in log if e.key == texts[2])
    assert 0.9 <= slow[1] - slow[0] < 2.5


def test_persistent_failure_is_recorded_then_retried_and_cleared(catalog: Catalog, stub: RunningStub, add_prompts,
                                                                 single_turn) -> None:
    add_model(catalog, "stub-v1-1b", family="stub", version="1", size_b=1, endpoint=stub.base_url)
    [bad, good] = add_prompts(catalog, single_turn(["[[faults:500,500,500]] z", "fine"]))

    first = _generate(catalog, "stub-v1-1b", max_attempts=2)
    assert first.failures_written == 1
    assert catalog.arrow("SELECT prompt_id FROM responses").column(0).to_pylist() == [good]
    failure = catalog.arrow("SELECT * FROM failures").to_pylist()
    assert len(failure) == 1
    assert failure[0]["prompt_id"] == bad and failure[0]["task"] == "generate"
    assert failure[0]["attempts"] == 2 and "HTTP 500" in failure[0]["error"]

    second = _generate(catalog, "stub-v1-1b", max_attempts=2)  # attempt 3 fails, attempt 4 succeeds
    assert second.plan.already_done == 1 and len(second.plan.todo) == 1
    assert sorted(catalog.arrow("SELECT prompt_id FROM responses").column(0).to_pylist()) == sorted([bad, good])
    assert catalog.scalar("SELECT count(*) FROM failures") == 0


def test_sampling_parameters_reach_the_server(catalog: Catalog, stub: RunningStub, add_prompts, single_turn) -> None:
    add_model(catalog, "stub-v1-1b", family="stub", version="1", size_b=1, endpoint=stub.base_url)
    add_prompts(catalog, single_turn(["p"]))
    spec = GenerateSpec(model="stub-v1-1b", params=SamplingParams(temperature=0.3, top_p=0.8, max_tokens=7, seed=5),
                        n=2)
    backend = get_backend(get_model(catalog, "stub-v1-1b"), BackendOptions(served_model="served-name", **FAST_RETRY))
    run_generation(catalog, plan_generation(catalog, spec), backend, progress=False)
    params = [e.params for e in stub.server.log]
    assert len(params) == 2
    assert all(p["model"] == "served-name" and p["temperature"] == 0.3 and p["top_p"] == 0.8
               and p["max_tokens"] == 7 for p in params)
    assert params[0]["seed"] != params[1]["seed"]  # each sample its own derived seed
    stored = catalog.arrow("SELECT DISTINCT sampling FROM responses").column(0).to_pylist()
    assert stored == ['{"max_tokens":7,"seed":5,"temperature":0.3,"top_p":0.8}']
