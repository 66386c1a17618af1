"""Real third-party data: counts equal the files', a second ingest is a no-op, the matrix
shows MT-Bench's vicuna size axis, GPT-4 'no answer' zeros are stored as not-ok."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tso_data import ids
from tso_data.catalog import Catalog


def test_mt_bench_counts_match_the_files(real_catalog: Catalog, shared_data: Path, cli_run, read_jsonl) -> None:
    questions = read_jsonl(shared_data / "mt_bench" / "questions.jsonl")
    responses = read_jsonl(shared_data / "mt_bench" / "responses.jsonl")
    got = real_catalog.arrow(
        "SELECT count(*) AS n, min(n_turns) AS lo, max(n_turns) AS hi FROM prompts WHERE source = 'mt_bench'"
    ).to_pylist()[0]
    assert got == {"n": len(questions), "lo": 2, "hi": 2}
    per_model = {
        r["model"]: r["n"]
        for r in real_catalog.arrow(
            "SELECT lower(r.model) AS model, count(*) AS n FROM responses r JOIN prompts p USING (prompt_id) "
            "WHERE p.source = 'mt_bench' GROUP BY 1"
        ).to_pylist()
    }
    assert per_model == dict(Counter(str(r["model"]).lower() for r in responses))
    assert sum(per_model.values()) == len(responses) == 2480
    # both turns kept, in order
    first = responses[0]
    stored = real_catalog.arrow(
        "SELECT r.turns FROM responses r JOIN prompts p USING (prompt_id) "
        "WHERE p.external_id = ? AND p.source = 'mt_bench' AND r.model = ?",
        [str(first["question_id"]), first["model"]],
    ).to_pylist()
    assert stored == [{"turns": [first["turn_1"], first["turn_2"]]}]


def test_self_instruct_prompts_answers_and_responses(real_catalog: Catalog, shared_data: Path, cli_run,
                                                     read_jsonl) -> None:
    si = shared_data / "self_instruct_user_oriented"
    prompts = read_jsonl(si / "prompts.jsonl")
    responses = read_jsonl(si / "responses.jsonl")
    n = real_catalog.scalar("SELECT count(*) FROM prompts WHERE source = 'self_instruct'")
    assert n == len({(p["instruction"], p["input"]) for p in prompts}) == 252
    answers = real_catalog.arrow(
        "SELECT a.turns[1] AS text, p.external_id FROM answers a JOIN prompts p USING (prompt_id) "
        "WHERE p.source = 'self_instruct' AND a.source = 'human'"
    ).to_pylist()
    assert {a["external_id"]: a["text"] for a in answers} == {p["prompt_id"]: p["human_output"] for p in prompts}
    counts = dict(Counter(r["model"] for r in responses))
    got = {
        r["model"]: r["n"]
        for r in real_catalog.arrow(
            "SELECT model, count(*) AS n FROM responses r JOIN prompts p USING (prompt_id) "
            "WHERE p.source = 'self_instruct' GROUP BY model"
        ).to_pylist()
    }
    assert got == counts and len(got) == 8 and sum(got.values()) == 8 * 252
    # instruction + input are joined into one user message, input after a blank line
    with_input = next(p for p in prompts if p["input"])
    msgs = real_catalog.arrow(
        "SELECT messages FROM prompts WHERE external_id = ? AND source = 'self_instruct'", [with_input["prompt_id"]]
    ).to_pylist()[0]["messages"]
    assert msgs == [{"role": "user", "content": f"{with_input['instruction']}\n\n{with_input['input']}"}]


def test_ids_equal_the_python_definitions(real_catalog: Catalog, cli_run, read_jsonl) -> None:
    for row in real_catalog.arrow("SELECT prompt_id, messages FROM prompts").to_pylist():
        assert row["prompt_id"] == ids.prompt_id(row["messages"])
    for row in real_catalog.arrow("SELECT answer_id, prompt_id, source, turns FROM answers").to_pylist():
        assert row["answer_id"] == ids.answer_id(row["prompt_id"], row["source"], row["turns"])
    for row in real_catalog.arrow("SELECT * FROM responses USING SAMPLE 200 ROWS").to_pylist():
        assert row["response_id"] == ids.response_id(row["prompt_id"], row["model"], "ingested", row["sample_index"])


def test_vicuna_gpt4_reviews_become_two_judgments_per_row(real_catalog: Catalog, shared_data: Path, cli_run,
                                                          read_jsonl) -> None:
    reviews = read_jsonl(shared_data / "vicuna_eval_gpt4_review" / "judgments.jsonl")
    rows = real_catalog.arrow(
        "SELECT source, status, score, raw_text, scale_min, scale_max FROM judgments"
    ).to_pylist()
    assert len(rows) == 2 * len(reviews) == 2080
    zeros = sum((r["score_1"] == 0) + (r["score_2"] == 0) for r in reviews)
    not_ok = [r for r in rows if r["status"] != "ok"]
    assert len(not_ok) == zeros == 4
    assert all(r["score"] is None and r["status"] == "error" and r["raw_text"] for r in not_ok)
    assert min(r["score"] for r in rows if r["status"] == "ok") >= 1
    expected = Counter()
    for r in reviews:
        for side in ("1", "2"):
            if r[f"score_{side}"] > 0:
                expected[r[f"model_{side}"]] += r[f"score_{side}"]
    got = Counter()
    for r in rows:
        if r["status"] == "ok":
            got[r["source"]] += r["score"]
    assert got == expected


def test_second_ingest_adds_nothing_and_says_so(real_catalog: Catalog, shared_data: Path, cli_run, read_jsonl) -> None:
    tables = ("prompts", "answers", "responses", "judgments")
    before = {t: real_catalog.scalar(f"SELECT count(*) FROM {t}") for t in tables}
    c = ["-c", str(real_catalog.root)]
    mt = shared_data / "mt_bench"
    out = cli_run("ingest", "responses", str(mt / "responses.jsonl"), "--prompt-source", "mt_bench", "--json",
                  *c).output
    report = json.loads(out[out.index("{"):])
    assert report["new"] == 0 and report["files"][0]["existing"] == 2480
    ve = shared_data / "vicuna_eval_gpt4_review"
    text = cli_run("ingest", "judgments", str(ve / "judgments.jsonl"), "--prompt-source", "vicuna_eval",
                   "--map", "model=model_1,model_2", "--map", "score=score_1,score_2", *c).output
    assert "nothing new" in text
    cli_run("ingest", "prompts", str(mt / "questions.jsonl"), "--set", "source=mt_bench", "--map",
            "turns=turn_1,turn_2", *c)
    after = {t: real_catalog.scalar(f"SELECT count(*) FROM {t}") for t in before}
    assert after == before


def test_matrix_grid_shows_vicuna_size_axis(real_catalog: Catalog, cli_run, read_jsonl) -> None:
    out = cli_run("models", "list", "-c", str(real_catalog.root)).output
    block = out[out.index("family vicuna"):]
    block = block[: block.index("family", 10)] if "family" in block[10:] else block
    header = next(line for line in block.splitlines() if "version" in line)
    assert header.index("7B") < header.index("13B") < header.index("33B")
    for name in ("vicuna-7b-v1.3", "vicuna-13b-v1.3", "vicuna-33b-v1.3"):
        assert name in block
    assert "80 responses" in block
    rows = json.loads(cli_run("models", "list", "--json", "-c", str(real_catalog.root)).output)
    vicuna = {r["name"]: (r["size_b"], r["responses"]) for r in rows if r["family"] == "vicuna" and "v1.3" in r["name"]}
    assert vicuna == {"vicuna-7b-v1.3": (7.0, 80), "vicuna-13b-v1.3": (13.0, 80), "vicuna-33b-v1.3": (33.0, 80)}
    human = next(r for r in rows if r["name"] == "human")
    assert human["responses"] == 252


def test_sql_and_status(real_catalog: Catalog, cli_run, read_jsonl) -> None:
    c = ["-c", str(real_catalog.root)]
    rows = json.loads(cli_run("sql", "SELECT count(*) AS n FROM responses", "--json", *c).output)
    assert rows == [{"n": 2480 + 2016 + 560}]
    csv_out = cli_run("sql", "SELECT 1 AS a, 'x' AS b", "--csv", *c).output
    assert csv_out == "a,b\n1,x\n"  # Unix line ends: shell scripts read it without stripping \r
    bad = cli_run("sql", "DELETE FROM prompts", *c, ok=False)
    assert bad.exit_code == 2 and "--write" in bad.output and len(bad.output.strip().splitlines()) == 1
    bad = cli_run("sql", "SELEC nonsense", *c, ok=False)
    assert bad.exit_code == 2 and bad.output.startswith("error: sql:")
    status = json.loads(cli_run("status", "--base", "vicuna-13b-v1.3", "--json", *c).output)
    assert status["counts"]["responses"] == 5056
    r = status["round"]
    assert r["prompts_without_base_response"] == status["prompts_by_split"]["train"] - 80
    assert r["base_responses_without_ok_judgment"] == 80
    # MT-Bench's dotted versions ('v1.3') order natively: the vicuna family is a matrix of
    # one version x three sizes, so the pools resolve as build resolves them
    assert r["pool_error"] is None
    assert r["positive_sources"] == ["human", "vicuna-33b-v1.3"]  # + newest-largest
    assert r["negative_sources"] == ["vicuna-7b-v1.3", "vicuna-7b:20230322-fp16"]  # smaller than the 13B base
