"""`tso-data ingest verdicts`: AlpacaEval annotations and FastChat pairwise judgments enter the
leaderboard unchanged — the numbers equal alpaca_eval's own metric code on the same file —
and bad files store nothing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from eval_helpers import table_counts, write_alpaca_annotations

from tso_data.catalog import Catalog
from tso_data.cli.main import cli


def alpaca_rows(n: int, seed: int, model: str = "my-model", weird: bool = False) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        preference = float(1 + rng.uniform()) if i % 3 else float(rng.choice([1.0, 2.0, 1.5]))
        if weird and i % 7 == 0:
            preference = 0.0  # AlpacaEval's legacy draw
        if weird and i % 11 == 5:
            preference = None  # a failed annotation
        rows.append({"instruction": f"Explain idea {i}.",
                     "output_1": "baseline says " + "x" * int(rng.integers(20, 400)),
                     "generator_1": "gpt4_1106_preview", "dataset": "helpful_base" if i % 2 else "koala",
                     "output_2": f"{model} says " + "y" * int(rng.integers(10, 600)), "generator_2": model,
                     "annotator": "weighted_alpaca_eval_gpt4_turbo", "preference": preference,
                     "raw_completion": {"text": "m" if preference and preference < 1.5 else "M"}})
    return rows


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_alpaca_eval_annotations_give_alpaca_evals_numbers(catalog: Catalog, tmp_path: Path,
                                                           alpaca_eval_metrics) -> None:
    rows = alpaca_rows(60, seed=1, weird=True)
    path = write_alpaca_annotations(tmp_path / "annotations.json", rows)
    result = invoke("ingest", "verdicts", str(path), "-c", str(catalog.root), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)[0]
    assert (report["records"], report["verdicts"], report["new_verdicts"]) == (60, 60, 60)
    assert report["unparsed"] == sum(r["preference"] is None for r in rows)
    assert report["new_prompts"] == 60 and report["new_responses"] == 120
    assert sorted(report["new_models"]) == ["gpt4_1106_preview", "my-model"]
    again = json.loads(invoke("ingest", "verdicts", str(path), "-c", str(catalog.root), "--json").output)[0]
    assert again["new_verdicts"] == again["new_prompts"] == again["new_responses"] == 0  # idempotent

    board = json.loads(invoke("eval", "-c", str(catalog.root), "--judge", "weighted_alpaca_eval_gpt4_turbo",
                              "--baseline", "gpt4_1106_preview", "--pairwise", "--stored-only", "--json").output)
    ours = next(m for m in board["models"] if m["model"] == "my-model")
    theirs = alpaca_eval_metrics.get_winrate(pd.DataFrame(rows))
    assert ours["win_rate"] == pytest.approx(theirs["win_rate"], abs=1e-9)
    assert ours["standard_error"] == pytest.approx(theirs["standard_error"], abs=1e-9)
    assert ours["discrete_win_rate"] == pytest.approx(theirs["discrete_win_rate"], abs=1e-9)
    assert (ours["n_wins"], ours["n_losses"], ours["n_draws"], ours["n_pairwise"]) == (
        theirs["n_wins"], theirs["n_wins_base"], theirs["n_draws"], theirs["n_total"])
    judged = [r for r in rows if r["preference"] is not None]
    assert ours["avg_length"] == pytest.approx(np.mean([len(r["output_2"]) for r in judged]))


def test_given_difficulties_reproduce_alpaca_evals_lc_win_rate(catalog: Catalog, tmp_path: Path, alpaca_eval_metrics,
                                                               monkeypatch) -> None:
    """The whole path — stored lengths, AlpacaEval's `index`-keyed difficulty file — against
    alpaca_eval's length_controlled_v1 without gamed rows (a catalog has none)."""
    rows = alpaca_rows(120, seed=2)
    rng = np.random.default_rng(3)
    difficulty = rng.normal(size=len(rows))
    for row, d in zip(rows, difficulty):  # make the preferences depend on difficulty and length
        delta = (len(row["output_1"]) - len(row["output_2"])) / 200
        row["preference"] = float(1 + 1 / (1 + np.exp(-(0.9 * d - np.tanh(delta) + rng.normal(scale=0.3)))))
    path = write_alpaca_annotations(tmp_path / "annotations.json", rows)
    pd.DataFrame({"index": range(len(rows)), "instruction_difficulty": difficulty}).to_csv(
        tmp_path / "instruction_difficulty.csv", index=False)
    assert invoke("ingest", "verdicts", str(path), "-c", str(catalog.root)).exit_code == 0
    board = json.loads(invoke("eval", "-c", str(catalog.root), "--judge", "weighted_alpaca_eval_gpt4_turbo",
                              "--baseline", "gpt4_1106_preview", "--pairwise", "--stored-only", "--json",
                              "--difficulty", str(tmp_path / "instruction_difficulty.csv")).output)
    assert board["difficulty"] == "given"
    ours = next(m for m in board["models"] if m["model"] == "my-model")

    gamed = pd.DataFrame({"index": range(len(rows)), "instruction_difficulty": difficulty, "model": "none",
                          "preference": 0.5, "std_delta_len": 0.0, "not_gamed_baseline": False})
    gamed.to_csv(tmp_path / "df_gamed.csv", index=False)
    glm = alpaca_eval_metrics.glm
    monkeypatch.setattr(glm, "hf_hub_download", lambda **_: str(tmp_path / "df_gamed.csv"))
    info = dict(glm.GLM_INFO["length_controlled_v1"], regularize_to_baseline_lambda=None)
    with warnings.catch_warnings():  # scikit-learn's deprecations inside alpaca_eval, not ours
        warnings.simplefilter("ignore", FutureWarning)
        theirs = glm.get_length_controlled_winrate(pd.DataFrame(rows), save_weights_dir=None, glm_info=info)
    assert ours["lc_win_rate"] == pytest.approx(theirs["length_controlled_winrate"], abs=0.1)
    assert ours["lc_standard_error"] == pytest.approx(theirs["lc_standard_error"], abs=0.1)


def test_a_preference_outside_the_scale_stores_nothing(catalog: Catalog, tmp_path: Path) -> None:
    rows = alpaca_rows(5, seed=0)
    rows[2]["preference"] = 2.5
    before = table_counts(catalog)
    result = CliRunner().invoke(cli, ["ingest", "verdicts", str(write_alpaca_annotations(tmp_path / "a.json", rows)),
                                      "-c", str(catalog.root)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'a.json'}:3: field 'preference': 2.5 is outside the preference scale [1, 2] "
        "(0 = a draw in old files)")
    assert table_counts(catalog) == before


def test_outputs_that_differ_from_stored_answers_store_nothing(catalog: Catalog, tmp_path: Path) -> None:
    rows = alpaca_rows(6, seed=0)
    assert invoke("ingest", "verdicts", str(write_alpaca_annotations(tmp_path / "a.json", rows)),
                  "-c", str(catalog.root)).exit_code == 0
    changed = alpaca_rows(6, seed=0, model="my-model")
    changed[4]["output_2"] += " (edited)"
    changed[4]["annotator"] = changed[5]["annotator"] = "another-judge"
    before = table_counts(catalog)
    result = CliRunner().invoke(cli, ["ingest", "verdicts", str(write_alpaca_annotations(tmp_path / "b.json", changed)),
                                      "-c", str(catalog.root)])
    assert result.exit_code == 2
    assert "b.json:5: field 'output_2': differs from the 1 stored answer(s) of 'my-model'" in result.output
    assert table_counts(catalog) == before


def _mt_bench_catalog(catalog: Catalog, shared_data: Path, tmp_path: Path, models: tuple[str, str],
                      questions: tuple[int, ...]) -> dict[tuple[int, str], dict[str, str]]:
    """MT-Bench questions and two models' real answers, through the normal ingest commands."""
    src = shared_data / "mt_bench"
    picked = [q for q in map(json.loads, open(src / "questions.jsonl")) if q["question_id"] in questions]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in picked))
    answers = {(r["question_id"], r["model"]): r for r in map(json.loads, open(src / "responses.jsonl"))
               if r["question_id"] in questions and r["model"] in models}
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in answers.values()))
    (tmp_path / "m.jsonl").write_text("".join(line for line in open(src / "models.jsonl")
                                              if json.loads(line)["model"] in models))
    for args in (["models", "import", str(tmp_path / "m.jsonl")],
                 ["ingest", "prompts", str(tmp_path / "q.jsonl"), "--set", "source=mt_bench", "--set", "split=heldout",
                  "--map", "turns=turn_1,turn_2"],
                 ["ingest", "responses", str(tmp_path / "r.jsonl"), "--prompt-source", "mt_bench"]):
        assert invoke(*args, "-c", str(catalog.root)).exit_code == 0
    return answers


def fastchat_line(qid: int, a: dict[str, str], b: dict[str, str], g1: str, g2: str) -> dict[str, object]:
    """A line of FastChat's gpt-4_pair.jsonl (turn 1): game 1 shows model_1 as A, game 2 model_2."""
    def prompt(first: dict[str, str], second: dict[str, str]) -> str:
        return (f"[User Question]\nq{qid}\n\n[The Start of Assistant A's Answer]\n{first['turn_1']}\n"
                f"[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{second['turn_1']}\n"
                "[The End of Assistant B's Answer]")
    return {"question_id": qid, "model_1": a["model"], "model_2": b["model"], "g1_winner": g1, "g2_winner": g2,
            "judge": ["gpt-4", "pair-v2"], "g1_user_prompt": prompt(a, b), "g1_judgment": f"... [[{g1[-1:]}]]",
            "g2_user_prompt": prompt(b, a), "g2_judgment": "...", "turn": 1, "tstamp": 0.0}


def test_fastchat_pairwise_judgments_over_real_mt_bench_answers(catalog: Catalog, shared_data: Path,
                                                                tmp_path: Path) -> None:
    models = ("vicuna-13b-v1.3", "alpaca-13b")
    answers = _mt_bench_catalog(catalog, shared_data, tmp_path, models, (81, 82, 83))
    lines = [fastchat_line(81, answers[81, models[1]], answers[81, models[0]], "model_2", "model_2"),  # vicuna twice
             fastchat_line(82, answers[82, models[1]], answers[82, models[0]], "model_1", "model_2"),  # inconsistent
             fastchat_line(83, answers[83, models[1]], answers[83, models[0]], "tie", "error")]
    path = tmp_path / "gpt-4_pair.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = json.loads(invoke("ingest", "verdicts", str(path), "-c", str(catalog.root), "--prompt-source", "mt_bench",
                               "--json").output)[0]
    assert (report["format"], report["records"], report["verdicts"], report["unparsed"]) == ("fastchat", 3, 6, 1)
    board = json.loads(invoke("eval", "-c", str(catalog.root), "--judge", "gpt-4", "--pairwise-rubric", "pair-v2",
                              "--baseline", "alpaca-13b", "--pairwise", "--stored-only", "--json").output)
    vicuna = next(m for m in board["models"] if m["model"] == "vicuna-13b-v1.3")
    # per question (vicuna = model_2 = answer 2): q81 2 and 2 -> 2; q82 1 and 2 -> 1.5; q83 tie only -> 1.5
    assert (vicuna["n_pairwise"], vicuna["n_wins"], vicuna["n_draws"], vicuna["n_losses"]) == (3, 1, 2, 0)
    assert vicuna["win_rate"] == pytest.approx(100 * (1 + 0.5 + 0.5) / 3)

    lines[1]["g2_user_prompt"] = lines[1]["g2_user_prompt"].replace(answers[82, models[0]]["turn_1"][:30], "TAMPERED")
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = CliRunner().invoke(cli, ["ingest", "verdicts", str(path), "-c", str(catalog.root),
                                      "--prompt-source", "mt_bench", "--set", "judge=other"])
    assert result.exit_code == 2
    assert ("gpt-4_pair.jsonl:2: field 'g2_user_prompt': the answer of 'vicuna-13b-v1.3' shown to the judge"
            in result.output)


def test_a_fastchat_winner_outside_the_scale_stores_nothing(catalog: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "pair.jsonl"
    path.write_text(json.dumps({"question_id": 1, "model_1": "a", "model_2": "b", "g1_winner": "model_3",
                                "g2_winner": "tie", "judge": ["gpt-4", "pair-v2"]}) + "\n")
    before = table_counts(catalog)
    result = CliRunner().invoke(cli, ["ingest", "verdicts", str(path), "-c", str(catalog.root)])
    assert result.exit_code == 2
    assert "pair.jsonl:1: field 'g1_winner': 'model_3' is not a verdict" in result.output
    assert table_counts(catalog) == before
