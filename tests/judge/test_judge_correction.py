"""Evaluation correction: judge-SFT export and agreement with held-out feedback."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tso_data.cli.main import cli
from tso_data.judge.metrics import mae, pairwise_accuracy, pearson, spearman
from tso_data.judge.parsing import parse_score


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def judged(catalog, judge: str, scores: dict[str, float], ids) -> None:
    with catalog.connect(read_only=False) as con:
        for i, (target, score) in enumerate(scores.items()):
            pid = ids["p1"] if target in ids["base1"] or target == ids["big1"] else ids["p2"]
            con.execute(
                "INSERT INTO judgments (judgment_id, target_id, target_kind, prompt_id, source, judge, rubric, "
                "rubric_version, sample_index, raw_text, score, status, attempts, scale_min, scale_max, created_at) "
                "VALUES (?, ?, 'response', ?, 'm-base', ?, 'overall', '1', 0, ?, ?, 'ok', 1, 1, 10, now())",
                [f"{judge}-{i}", target, pid, judge, f"Score: {score}", score],
            )


def test_agreement_on_a_known_case(small_catalog, jh) -> None:
    catalog, ids = small_catalog
    targets = ids["base1"] + ids["base2"]
    human = [2, 5, 8, 1, 4, 9]
    for t, s in zip(targets, human):
        jh.add_feedback(catalog, t, ids["p1"] if t in ids["base1"] else ids["p2"], s)
    # train-split feedback is not used for agreement
    jh.add_feedback(catalog, targets[0], ids["p1"], 10, split="train")
    judged(catalog, "good", dict(zip(targets, [3, 6, 9, 2, 5, 10])), ids)  # human + 1
    judged(catalog, "bad", dict(zip(targets, [9, 5, 2, 9, 6, 1])), ids)    # order reversed in each prompt
    judged(catalog, "partial", dict(zip(targets[:5], [2, 5, 8, 1, 4])), ids)  # misses one item
    out = json.loads(invoke("judge-agreement", "-c", str(catalog.root), "--judge", "good", "--judge", "bad",
                            "--json").output)
    good, bad = out
    assert good["n"] == bad["n"] == 6 and good["n_missing"] == 0
    assert good["pearson"] == pytest.approx(1.0) and good["spearman"] == pytest.approx(1.0)
    assert good["mae"] == pytest.approx(1.0)
    assert good["pairwise_accuracy"] == 1.0 and good["n_pairs"] == 6  # 3 pairs in each of 2 prompts
    assert bad["pairwise_accuracy"] == 0.0
    assert bad["mae"] == pytest.approx((7 + 0 + 6 + 8 + 2 + 8) / 6)
    # comparing with a judge that lacks an item: every judge is measured on the common items
    out = json.loads(invoke("judge-agreement", "-c", str(catalog.root), "--judge", "good", "--judge", "partial",
                            "--json").output)
    assert [r["n"] for r in out] == [5, 5] and out[1]["n_missing"] == 1
    assert out[1]["mae"] == 0.0
    table = invoke("judge-agreement", "-c", str(catalog.root), "--judge", "good").output
    assert "pairwise acc" in table and "good" in table


def test_agreement_bad_input(small_catalog, jh) -> None:
    catalog, ids = small_catalog
    run = lambda *a: CliRunner().invoke(cli, ["judge-agreement", "-c", str(catalog.root), *a])  # noqa: E731
    result = run("--judge", "x")
    assert result.exit_code == 2 and "no feedback with split 'heldout'" in result.output
    jh.add_feedback(catalog, ids["big1"], ids["p1"], 5)
    assert "judge 'x' has no ok judgments" in run("--judge", "x").output


def test_export_judge_sft_is_conversational_parquet(small_catalog, jh, tmp_path, tiny_model_dir) -> None:
    catalog, ids = small_catalog
    jh.add_feedback(catalog, ids["base1"][0], ids["p1"], 9, rationale="Correct and minimal.", split="train")
    jh.add_feedback(catalog, ids["base2"][0], ids["p2"], 3, rubric="logic", rationale="", split="train")
    jh.add_feedback(catalog, ids["base2"][1], ids["p2"], 4, split="heldout")  # not exported
    out = tmp_path / "sft.parquet"
    result = invoke("export", "judge-sft", "-c", str(catalog.root), "--out", str(out))
    assert "wrote 2" in result.output
    table = pq.read_table(out)
    assert table.schema.field("messages").type.value_type.names == ["role", "content"]
    assert table.schema.metadata[b"tso.kind"] == b"judge-sft"
    rows = {r["rubric"]: r for r in table.to_pylist()}
    overall = rows["overall"]["messages"]
    assert [m["role"] for m in overall] == ["system", "user", "assistant"]
    assert overall[2]["content"] == "Correct and minimal.\n\nScore: 9"
    assert "What is 2+2?" in overall[1]["content"] and "[Reply to grade]\n4" in overall[1]["content"]
    # the target the corrected judge learns is exactly what the parser reads back
    for r in rows.values():
        assert parse_score(r["messages"][-1]["content"], 1, 10).score == r["score"]
    assert rows["logic"]["messages"][2]["content"] == "Score: 3"
    # TRL / datasets read it as a conversational dataset; the chat template applies
    import datasets
    from transformers import AutoTokenizer

    ds = datasets.load_dataset("parquet", data_files=str(out), split="train")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tokenizer.apply_chat_template(ds[0]["messages"], tokenize=False)
    assert "Score:" in text
    # --rubric filters
    invoke("export", "judge-sft", "-c", str(catalog.root), "--out", str(out), "--rubric", "logic")
    assert pq.read_table(out).column("rubric").to_pylist() == ["logic"]


def test_export_bad_input(small_catalog, jh, tmp_path) -> None:
    catalog, ids = small_catalog
    out = tmp_path / "sft.parquet"
    run = lambda: CliRunner().invoke(cli, ["export", "judge-sft", "-c", str(catalog.root), "--out", str(out)])  # noqa: E731
    assert "no train-split feedback" in run().output
    jh.add_feedback(catalog, "0000000000000000", ids["p1"], 5, split="train")
    result = run()
    assert result.exit_code == 2 and "not in the catalog" in result.output and not out.exists()
    with catalog.connect(read_only=False) as con:
        con.execute("DELETE FROM feedback")
    jh.add_feedback(catalog, ids["big1"], ids["p1"], 5, rubric="helpfulness", split="train")
    result = run()
    assert result.exit_code == 2 and "rubric(s) helpfulness that are not defined" in result.output
    with catalog.connect(read_only=False) as con:
        con.execute("DELETE FROM feedback")
    jh.add_feedback(catalog, ids["big1"], ids["p1"], 12, split="train")
    result = run()
    assert result.exit_code == 2 and "field 'score': 12 is outside the scale of rubric 'overall': 1-10" in result.output
    assert not out.exists()


scores = st.lists(st.integers(1, 10), min_size=3, max_size=30)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), x=scores)
def test_metrics_agree_with_scipy(data, x) -> None:
    y = data.draw(st.lists(st.integers(1, 10), min_size=len(x), max_size=len(x)))
    if len(set(x)) > 1 and len(set(y)) > 1:
        assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-9)
    else:
        assert pearson(x, y) is None and spearman(x, y) is None
    assert mae(x, y) == pytest.approx(sum(abs(a - b) for a, b in zip(x, y)) / len(x))
    acc, n = pairwise_accuracy(x, y)
    # brute force over all pairs
    right, total = 0.0, 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            if y[i] == y[j]:
                continue
            total += 1
            right += 0.5 if x[i] == x[j] else float((x[i] > x[j]) == (y[i] > y[j]))
    assert n == total and (acc is None if total == 0 else acc == pytest.approx(right / total))
