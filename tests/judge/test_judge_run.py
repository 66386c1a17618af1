"""Judge runs through the CLI: model judges (scripted backend), function judges, retries,
resume, --reparse, bad input."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from tso_data.cli import judge_cmds
from tso_data.cli.main import cli


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def rows(catalog, judge: str) -> list[dict]:
    return catalog.arrow(
        "SELECT * FROM judgments WHERE judge = ? ORDER BY target_id, rubric, sample_index", [judge]
    ).to_pylist()


@pytest.fixture()
def scripted(monkeypatch, jh):
    """Install a scripted backend behind `--judge`; returns a setter for its script."""
    holder: dict[str, object] = {}

    def install(default: list[str | None], script: dict[str, list[str | None]] | None = None):
        backend = jh.ScriptedBackend(script or {}, default)
        holder["backend"] = backend
        monkeypatch.setattr(judge_cmds, "_model_backend", lambda catalog, judge, name: (backend, "v7"))
        return backend

    return install


def test_model_judge_stores_scores_and_never_numbers_for_unparsed(small_catalog, scripted, jh) -> None:
    catalog, ids = small_catalog
    jh.add_models(catalog, "judge-1")
    backend = scripted(["I am not sure what to say.", "Meh.", "Fine. Score: 6"])
    result = invoke("judge", "-c", str(catalog.root), "--judge", "judge-1", "--model", "m-base",
                    "--max-attempts", "2", "--json")
    summary = json.loads(result.output)
    stored = rows(catalog, "judge-1")
    assert len(stored) == 6 and summary["planned"] == 6
    # every judgment got 2 attempts, none parsed: unparsed, raw text kept, score NULL
    assert {r["status"] for r in stored} == {"unparsed"}
    assert all(r["score"] is None and r["attempts"] == 2 and r["raw_text"] == "Meh." for r in stored)
    assert summary["written"] == {"unparsed": 6} and summary["calls"] == 12
    # a retry differs from the first attempt: its own seed
    seeds = {}
    for req in backend.requests:
        seeds.setdefault(req.key, set()).add(req.params.seed)
    assert all(len(s) == 2 for s in seeds.values())
    # rerun with more attempts: the third text parses; ok rows keep their attempts count
    backend3 = scripted(["Fine. Score: 6"])
    invoke("judge", "-c", str(catalog.root), "--judge", "judge-1", "--model", "m-base", "--max-attempts", "3")
    stored = rows(catalog, "judge-1")
    assert {(r["status"], r["score"], r["attempts"]) for r in stored} == {("ok", 6.0, 3)}
    assert len(backend3.requests) == 6
    assert {r["judge_version"] for r in stored} == {"v7"}
    # resume: nothing left to do, no calls
    backend4 = scripted(["Score: 1"])
    out = json.loads(invoke("judge", "-c", str(catalog.root), "--judge", "judge-1", "--model", "m-base",
                            "--json").output)
    assert backend4.requests == [] and out["already_ok"] == 6


def test_judge_prompt_contains_conversation_rubric_and_reference(small_catalog, scripted, jh) -> None:
    catalog, ids = small_catalog
    jh.add_models(catalog, "judge-1")
    backend = scripted(["Score: 9"])
    invoke("judge", "-c", str(catalog.root), "--judge", "judge-1", "--where", f"prompt_id = '{ids['p2']}'",
           "--rubric", "logic", "--rubric", "factuality", "--samples", "2")
    # 3 base responses x 2 rubrics x 2 samples
    assert len(backend.requests) == 12
    user = backend.requests[0].messages[1]["content"]
    assert "[User, turn 1]\nName a prime." in user and "[Assistant, turn 1]\n2" in user
    assert "[User, turn 2]\nAnother one?" in user and "[Reply to grade]\n3" in user
    stored = rows(catalog, "judge-1")
    assert {r["rubric"] for r in stored} == {"logic", "factuality"}
    assert {r["sample_index"] for r in stored} == {0, 1}
    assert {(r["scale_min"], r["scale_max"], r["rubric_version"]) for r in stored} == {(1.0, 10.0, "1")}
    # reference answers from a named source are shown when present
    backend = scripted(["Score: 9"])
    invoke("judge", "-c", str(catalog.root), "--judge", "judge-2", "--model", "m-big", "--reference", "human")
    assert "Four." in backend.requests[0].messages[1]["content"]


def test_backend_errors_are_stored_as_errors_and_retried(small_catalog, scripted, jh) -> None:
    catalog, ids = small_catalog
    scripted([None, "Score: 3"])
    out = json.loads(invoke("judge", "-c", str(catalog.root), "--judge", "j", "--model", "m-big", "--json").output)
    assert out["written"] == {"ok": 1}
    assert [(r["status"], r["attempts"]) for r in rows(catalog, "j")] == [("ok", 2)]
    scripted([None])
    # every request of this run failed: exit 2 with one line, the error row kept for the retry
    failed = invoke("judge", "-c", str(catalog.root), "--judge", "j2", "--model", "m-big", "--max-attempts", "1",
                    "--json")
    assert failed.exit_code == 2 and failed.stdout == ""
    assert failed.stderr.strip() == ("error: judge j2: every request failed (1 of 1; e.g. HTTP 500: server error); "
                                     "the failed judgments are stored as 'error' and retried next run")
    [row] = rows(catalog, "j2")
    assert (row["status"], row["score"], row["raw_text"]) == ("error", None, "HTTP 500: server error")


def test_reparse_fixes_rows_without_calling_a_model(small_catalog, scripted, jh, monkeypatch) -> None:
    catalog, ids = small_catalog
    jh.add_models(catalog, "j")
    scripted(["Verdict -> 7 points"])
    invoke("judge", "-c", str(catalog.root), "--judge", "j", "--model", "m-big", "--max-attempts", "1")
    assert [r["status"] for r in rows(catalog, "j")] == ["unparsed"]
    # a "parser change": teach it the 'N points' form
    from tso_data.judge import parsing, reparse

    original = parsing.parse_score

    def patched(text, lo, hi):
        if text and text.endswith("7 points"):
            return parsing.ScoreParse(7.0, "ok", "points")
        return original(text, lo, hi)

    monkeypatch.setattr(reparse, "parse_score", patched)
    monkeypatch.setattr(judge_cmds, "_model_backend", lambda *a: pytest.fail("reparse must not call a model"))
    out = json.loads(invoke("judge", "-c", str(catalog.root), "--judge", "j", "--reparse", "--json").output)
    assert out["reparsed"] == {"unparsed->ok": 1}
    [row] = rows(catalog, "j")
    assert (row["status"], row["score"], row["raw_text"]) == ("ok", 7.0, "Verdict -> 7 points")


FUNCTIONS = '''
__version__ = "1.2"

def length_score(prompt_messages, answer_turns, reference):
    return float(min(10, 1 + len(answer_turns[-1]))), f"{len(answer_turns[-1])} characters"

def exact(prompt_messages, answer_turns, reference):
    return 10 if reference and answer_turns[-1] == reference[-1] else 1

def broken(prompt_messages, answer_turns, reference):
    raise RuntimeError("verifier crashed on " + answer_turns[-1])

def too_big(prompt_messages, answer_turns, reference):
    return 42.0

def not_a_number(prompt_messages, answer_turns, reference):
    return "good"
'''


@pytest.fixture()
def fn_module(tmp_path: Path, monkeypatch) -> str:
    (tmp_path / "fnmods").mkdir()
    (tmp_path / "fnmods" / "tso_test_judges.py").write_text(textwrap.dedent(FUNCTIONS))
    monkeypatch.syspath_prepend(str(tmp_path / "fnmods"))
    return "tso_test_judges"


def test_function_judges_store_through_the_same_table(small_catalog, fn_module) -> None:
    catalog, ids = small_catalog
    out = json.loads(invoke("judge", "-c", str(catalog.root), "--judge", f"fn:{fn_module}:length_score",
                            "--model", "m-base", "--json").output)
    assert out["written"] == {"ok": 6}
    stored = rows(catalog, f"fn:{fn_module}:length_score")
    assert {(r["score"], r["raw_text"], r["judge_version"]) for r in stored} == {(2.0, "1 characters", "1.2")}
    invoke("judge", "-c", str(catalog.root), "--judge", f"fn:{fn_module}:exact", "--where", "source = 'm-big'",
           "--reference", "human")
    assert [r["score"] for r in rows(catalog, f"fn:{fn_module}:exact")] == [1.0]


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("broken", "RuntimeError: verifier crashed on 4"),
        ("too_big", "returned 42, outside the scale of rubric 'overall': 1-10"),
        ("not_a_number", "returned str 'good'; expected a number"),
    ],
)
def test_function_judge_failures_are_errors_with_messages(small_catalog, fn_module, function, message) -> None:
    catalog, ids = small_catalog
    judge = f"fn:{fn_module}:{function}"
    result = invoke("judge", "-c", str(catalog.root), "--judge", judge, "--where", f"prompt_id = '{ids['p1']}'",
                    "--model", "m-base")
    assert "now error" in result.output and message[:30] in result.output
    stored = rows(catalog, judge)
    assert len(stored) == 3
    assert all(r["status"] == "error" and r["score"] is None and r["raw_text"].startswith(message[:20]) for r in stored)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--judge", "fn:no_such_module_xyz:f", "--model", "m-base"], "cannot import module 'no_such_module_xyz'"),
        (["--judge", "fn:json:no_such_fn", "--model", "m-base"], "has no callable 'no_such_fn'"),
        (["--judge", "fn:oops", "--model", "m-base"], "expected fn:module:function"),
        (["--judge", "j", "--model", "m-base", "--rubric", "nope"], "unknown rubric(s) nope"),
        (["--judge", "j"], "choose what to judge"),
        (["--judge", "j", "--model", "nobody"], "nothing to judge"),
        (["--judge", "j", "--where", "no_such_column = 1"], "--where 'no_such_column = 1'"),
        (["--judge", "j", "--round", "1"], "field 'base_model': required"),
        (["--judge", "fn:json:dumps", "--model", "m-base", "--samples", "0"], "--samples must be >= 1"),
        (["--judge", "gpt-4 (ingested)", "--reparse"], "not a registered judge model"),
    ],
)
def test_bad_judge_input_is_one_line_exit_2(small_catalog, args, message) -> None:
    catalog, _ = small_catalog
    result = CliRunner().invoke(cli, ["judge", "-c", str(catalog.root), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert catalog.scalar("SELECT count(*) FROM judgments") == 0


def test_unregistered_model_judge_is_a_clear_error(small_catalog) -> None:
    catalog, _ = small_catalog
    result = CliRunner().invoke(cli, ["judge", "-c", str(catalog.root), "--judge", "not-a-model", "--model", "m-base"])
    assert result.exit_code == 2 and "not-a-model" in result.output


def test_round_resolves_the_base_model(small_catalog, scripted) -> None:
    catalog, _ = small_catalog
    catalog.round_config_path.write_text('base_model = "m-base"\n[round.1]\nbase_model = "m-big"\n')
    backend = scripted(["Score: 5"])
    invoke("judge", "-c", str(catalog.root), "--judge", "j", "--round", "1")
    assert len(backend.requests) == 1 and [r["source"] for r in rows(catalog, "j")] == ["m-big"]


def test_where_can_select_the_heldout_feedback_targets(small_catalog, fn_module, jh) -> None:
    """docs/judge.md's evaluation-correction workflow judges exactly the answers with held-out feedback."""
    catalog, ids = small_catalog
    jh.add_feedback(catalog, ids["base1"][1], ids["p1"], 7, split="heldout")
    jh.add_feedback(catalog, ids["base2"][2], ids["p2"], 3, split="heldout")
    jh.add_feedback(catalog, ids["base1"][0], ids["p1"], 5, split="train")
    heldout = "target_id IN (SELECT target_id FROM feedback WHERE split = 'heldout')"
    invoke("judge", "-c", str(catalog.root), "--judge", f"fn:{fn_module}:length_score", "--where", heldout)
    judged = {r["target_id"] for r in rows(catalog, f"fn:{fn_module}:length_score")}
    assert judged == {ids["base1"][1], ids["base2"][2]}
