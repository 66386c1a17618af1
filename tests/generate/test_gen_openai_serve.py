"""The openai backend against a real OpenAI-compatible server: `transformers serve`
serving the tiny model on 127.0.0.1 (addressed, as it names it, by its path)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tso_data.catalog import Catalog
from tso_data.matrix import add_model


def test_generate_through_a_real_openai_compatible_server(cli_run, catalog: Catalog, served_tiny_model: str,
                                                          tiny_model_dir: Path, add_prompts) -> None:
    add_model(catalog, "tiny-v1-0.001b", family="tiny", version="1", size_b=0.001, path=str(tiny_model_dir),
              endpoint=served_tiny_model)
    prompt_ids = add_prompts(catalog, [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": "Add 2 and 3."}, {"role": "user", "content": "Now double it."}],
    ])
    result = cli_run("generate", "-c", str(catalog.root), "--model", "tiny-v1-0.001b", "--backend", "openai",
                     "--n", "2", "--max-tokens", "4", "--seed", "1", "--concurrency", "2", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["responses_written"] == 4 and summary["failures"] == 0
    assert summary["requests"] == 6  # 2 samples x (1 + 2 turns)
    rows = catalog.arrow("SELECT * FROM responses").to_pylist()
    assert Counter(r["prompt_id"] for r in rows) == Counter({p: 2 for p in prompt_ids})
    for row in rows:
        assert row["backend"] == "openai"
        assert len(row["turns"]) == (2 if row["prompt_id"] == prompt_ids[1] else 1)
        assert all(isinstance(t, str) for t in row["turns"])
        turns = len(row["turns"])
        assert turns <= row["completion_tokens"] <= 4 * turns  # usage reported by the server, per turn summed
        assert row["prompt_tokens"] > 0 and row["finish_reason"] in ("stop", "length")
