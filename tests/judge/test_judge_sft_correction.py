"""Evaluation correction end to end: feedback -> `export judge-sft` -> `tso-train sft`
lowers the tiny judge's loss on the exported conversations (assistant tokens only)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tso_data.cli.main import cli

pytestmark = pytest.mark.slow


def assistant_loss(model_dir: Path, conversations: list[list[dict]]) -> float:
    """Token-mean NLL of the assistant tokens, encoded as tso-train encodes them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tso_train.data import encode_conversation

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for messages in conversations:
            seq = encode_conversation(tokenizer, messages)
            ids = torch.as_tensor(seq.input_ids)[None]
            logits = model(ids).logits[0, :-1]
            targets = ids[0, 1:]
            mask = torch.as_tensor(seq.label_mask[1:])
            nll = torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum")
            total += float(nll)
            count += int(mask.sum())
    return total / count


def test_sft_on_exported_judge_set_lowers_the_judge_loss(small_catalog, jh, tiny_model_dir, tmp_path) -> None:
    from tso_train.sft import SFTConfig, sft

    catalog, ids = small_catalog
    targets = [(t, ids["p1"]) for t in ids["base1"]] + [(t, ids["p2"]) for t in ids["base2"]]
    for i, (target, pid) in enumerate(targets):
        for rubric in ("overall", "logic"):
            jh.add_feedback(catalog, target, pid, float(3 + i), rubric=rubric, split="train",
                            rationale=f"The reply is {'right' if i % 2 else 'short'} and clear.")
    out = tmp_path / "judge-sft.parquet"
    result = CliRunner().invoke(cli, ["export", "judge-sft", "-c", str(catalog.root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    conversations = [row["messages"] for row in pq.read_table(out).to_pylist()]
    assert len(conversations) == 12
    before = assistant_loss(tiny_model_dir, conversations)
    summary = sft(SFTConfig(data=str(out), model=str(tiny_model_dir), out=str(tmp_path / "run"), epochs=4,
                            global_batch=4, micro_batch=4, lr=5e-3, warmup_ratio=0.0, max_length=1024, save_every=1000))
    after = assistant_loss(tmp_path / "run" / "final", conversations)
    print(f"judge loss before {before:.3f}, after {after:.3f}")
    assert after < before * 0.8, (before, after, summary)
