"""Aggregation, τ and the per-prompt score shape, on GPT-4's real scores and small cases."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from scipy import stats

from tso_data.catalog import Catalog
from tso_data.cli.main import cli
from tso_data.ids import judgment_id
from tso_data.judge.parsing import parse_pairwise

GPT4 = "gpt-4 (March 2023; FastChat eval v0)"


def insert_judgments(catalog: Catalog, rows: list[dict]) -> None:
    """Store scores as the judge command would (status ok, score in range)."""
    with catalog.connect(read_only=False) as con:
        for r in rows:
            con.execute(
                "INSERT INTO judgments (judgment_id, target_id, target_kind, prompt_id, source, judge, rubric, "
                "rubric_version, sample_index, raw_text, score, status, attempts, scale_min, scale_max, created_at) "
                "VALUES (?, ?, 'response', ?, ?, ?, ?, '1', ?, ?, ?, 'ok', 1, 1, 10, now())",
                [judgment_id(r["target_id"], r["judge"], r["rubric"], "1", r["key"]), r["target_id"], r["prompt_id"],
                 r["source"], r["judge"], r["rubric"], r.get("sample_index", 0), r.get("raw_text"), r["score"]],
            )


@pytest.fixture()
def vicuna_catalog(catalog: Catalog, shared_data, tmp_path):
    """Questions 1-2 of the Vicuna eval, every model's answer and GPT-4's pairwise scores,
    loaded with `tso-data ingest` as a user would (files filtered to two questions in tmp)."""
    base = shared_data / "vicuna_eval_gpt4_review"
    c = ["-c", str(catalog.root)]
    for m in map(json.loads, open(base / "models_raw.jsonl")):
        invoke("models", "add", m["model_id"], "--family", m["model_name"].split("-")[0], "--version", "1",
               "--size-b", "13", *c)
    for name in ("questions.jsonl", "responses.jsonl", "judgments.jsonl"):
        rows = [line for line in open(base / name) if json.loads(line)["question_id"] <= 2]
        (tmp_path / name).write_text("".join(rows))
    invoke("ingest", "prompts", str(tmp_path / "questions.jsonl"), "--set", "source=vicuna_eval", *c)
    invoke("ingest", "responses", str(tmp_path / "responses.jsonl"), "--map", "turns=text", "--prompt-source",
           "vicuna_eval", *c)
    invoke("ingest", "judgments", str(tmp_path / "judgments.jsonl"), "--prompt-source", "vicuna_eval",
           "--map", "model=model_1,model_2", "--map", "score=score_1,score_2", *c)
    return catalog


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def scores_json(catalog: Catalog, *args: str) -> dict:
    result = CliRunner().invoke(cli, ["scores", "-c", str(catalog.root), "--json", *args], catch_exceptions=False)
    return json.loads(result.output)


def test_ingested_gpt4_scores_match_their_review_texts(vicuna_catalog, shared_data) -> None:
    """Every ingested score is what the pairwise parser reads from the stored review text."""
    stored = {
        (r["raw_text"], r["source"]): r["score"]
        for r in vicuna_catalog.arrow(
            "SELECT raw_text, source, score, status FROM judgments WHERE status = 'ok'").to_pylist()
    }
    reviews = [r for r in map(json.loads, open(shared_data / "vicuna_eval_gpt4_review" / "judgments.jsonl"))
               if r["question_id"] <= 2]
    assert len(stored) == 2 * len(reviews) == 52
    for review in reviews:
        first, second = parse_pairwise(review["review_text"], 1, 10).scores
        assert stored[(review["review_text"], review["model_1"])] == first
        assert stored[(review["review_text"], review["model_2"])] == second


def test_tau_on_gpt4_scores_by_hand(vicuna_catalog) -> None:
    catalog = vicuna_catalog
    # alpaca-13b's GPT-4 scores (judgments.jsonl): q1 8, 8, 8, 8 -> 8.0; q2 7, 8, 9, 9 -> 8.25
    report = scores_json(catalog, "--base", "alpaca-13b:v1")
    assert report["judge"] == GPT4
    assert report["tau"] == {"mode": "global-mean", "value": pytest.approx(8.125), "n_base": 2}
    by_source = {d["source"]: d for d in report["distribution"]}
    # vicuna-13b clean-lang: q1 9, 8.5, 8.5, 8 -> 8.5; q2 9, 9, 9, 8 -> 8.75
    assert by_source["vicuna-13b:20230322-clean-lang"]["mean"] == pytest.approx(8.625)
    assert by_source["llama-13b:v1"]["n"] == 2 and by_source["llama-13b:v1"]["mean"] == pytest.approx(9.0)
    per_prompt = scores_json(catalog, "--base", "alpaca-13b:v1", "--tau-mode", "prompt-mean")
    assert per_prompt["tau"]["value"] is None
    assert sorted(t["tau"] for t in per_prompt["tau_per_prompt"]) == pytest.approx([8.0, 8.25])
    fixed = scores_json(catalog, "--base", "alpaca-13b:v1", "--tau-mode", "fixed", "--tau-value", "7")
    assert fixed["tau"]["value"] == 7.0
    # --round reads round.toml exactly as `tso-data build` does (base model, τ mode, split)
    catalog.round_config_path.write_text('base_model = "llama-13b:v1"\n[round.2]\nbase_model = "alpaca-13b:v1"\n')
    assert scores_json(catalog, "--round", "2")["tau"]["value"] == pytest.approx(8.125)
    assert scores_json(catalog, "--round", "1")["tau"]["value"] == pytest.approx(9.0)  # llama: 9 in every review


def test_weights_failed_judgments_and_per_prompt_shape(small_catalog, jh, tmp_path) -> None:
    catalog, ids = small_catalog
    base_scores = {ids["base1"][0]: [2, 4], ids["base1"][1]: [6, 6], ids["base1"][2]: [9, 7],
                   ids["base2"][0]: [1, 1], ids["base2"][1]: [1, 3], ids["base2"][2]: [10, 10]}
    rows = []
    for target, (fact, logic) in base_scores.items():
        pid = ids["p1"] if target in ids["base1"] else ids["p2"]
        for rubric, score in (("factuality", fact), ("logic", logic)):
            rows.append({"target_id": target, "prompt_id": pid, "source": "m-base", "judge": "J",
                         "rubric": rubric, "key": "0", "score": score})
    insert_judgments(catalog, rows)
    # a failed judgment of the same target never counts
    with catalog.connect(read_only=False) as con:
        con.execute(
            "INSERT INTO judgments (judgment_id, target_id, target_kind, prompt_id, source, judge, rubric, "
            "rubric_version, sample_index, raw_text, score, status, attempts, scale_min, scale_max, created_at) VALUES "
            "('x', ?, 'response', ?, 'm-base', 'J', 'logic', '1', 1, 'no idea', NULL, 'unparsed', 3, 1, 10, now())",
            [ids["base1"][0], ids["p1"]],
        )
    equal = scores_json(catalog, "--base", "m-base", "--judge", "J")
    expected = {t: (fact + logic) / 2 for t, (fact, logic) in base_scores.items()}
    assert equal["tau"]["value"] == pytest.approx(sum(expected.values()) / 6)
    weighted = scores_json(catalog, "--base", "m-base", "--judge", "J", "--weight", "factuality=3", "--weight",
                           "logic=1")
    expected_w = {t: (3 * fact + logic) / 4 for t, (fact, logic) in base_scores.items()}
    assert weighted["tau"]["value"] == pytest.approx(sum(expected_w.values()) / 6)
    # per-prompt skewness / excess kurtosis: the bias-corrected sample statistics
    shape = {r["prompt_id"]: r for r in equal["per_prompt"]}
    for pid, members in ((ids["p1"], ids["base1"]), (ids["p2"], ids["base2"])):
        values = [expected[t] for t in members]
        assert shape[pid]["n"] == 3
        assert shape[pid]["skewness"] == pytest.approx(stats.skew(values, bias=False))
    # kurtosis needs >= 4 samples; with 3 it is undefined (None), never a made-up number
    assert all(r["kurtosis"] is None for r in equal["per_prompt"])
    plot = tmp_path / "scores.png"
    result = CliRunner().invoke(cli, ["scores", "-c", str(catalog.root), "--base", "m-base", "--judge", "J",
                                      "--plot", str(plot)], catch_exceptions=False)
    assert "τ = " in result.output and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kurtosis_matches_scipy_with_many_samples(catalog, jh) -> None:
    pid = jh.add_prompt(catalog, [{"role": "user", "content": "q"}])
    values = [1, 2, 2, 3, 7, 8, 8, 8, 9, 10]
    rows = []
    for i, v in enumerate(values):
        rid = jh.add_response(catalog, pid, "base", [f"answer {i}"], i)
        rows.append({"target_id": rid, "prompt_id": pid, "source": "base", "judge": "J", "rubric": "overall",
                     "key": "0", "score": v})
    insert_judgments(catalog, rows)
    [shape] = scores_json(catalog, "--base", "base")["per_prompt"]
    assert shape["skewness"] == pytest.approx(stats.skew(values, bias=False))
    assert shape["kurtosis"] == pytest.approx(stats.kurtosis(values, fisher=True, bias=False))


def test_scores_bad_input(small_catalog) -> None:
    catalog, _ = small_catalog
    run = lambda *a: CliRunner().invoke(cli, ["scores", "-c", str(catalog.root), *a])  # noqa: E731
    assert "no scored judgments" in run("--base", "m-base").output
    assert run("--base", "m-base").exit_code == 2
    assert "--base MODEL or --round R" in run().output
    assert "RUBRIC=NUMBER" in run("--base", "m-base", "--judge", "J", "--weight", "logic").output
