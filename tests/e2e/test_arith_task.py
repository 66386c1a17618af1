"""The example task's generator and verifier: properties that the function judge and the
report rely on."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tso_data.examples.arith import (
    SCALE_MAX,
    SCALE_MIN,
    Problem,
    grade,
    make_splits,
    parse_question,
    score,
    write_task_files,
)

problems = st.builds(
    lambda a, b, op: Problem(max(a, b), op, min(a, b)) if op == "-" else Problem(a, op, b),
    st.integers(0, 99), st.integers(0, 99), st.sampled_from(["+", "-"]),
)


@given(problems)
def test_the_reference_answer_gets_full_marks_and_the_question_round_trips(p: Problem) -> None:
    assert parse_question(p.question) == p
    assert score(p.messages, [p.answer]) == SCALE_MAX


@given(problems, st.integers(-300, 300), st.text(max_size=30))
def test_every_answer_scores_within_the_scale(p: Problem, value: int, noise: str) -> None:
    for text in (f"{p.a} {p.op} {p.b} = {value}", f"{noise} {value}", noise):
        assert SCALE_MIN <= grade(p, text) <= SCALE_MAX


@given(problems, st.integers(1, 50))
def test_a_wrong_result_scores_below_the_right_one(p: Problem, off: int) -> None:
    right = grade(p, p.answer)
    wrong = grade(p, f"{p.a} {p.op} {p.b} = {p.result + off}")
    assert wrong < right
    # restating the wrong operands costs the 2 points of the echo
    assert grade(p, f"{p.a + 1} {p.op} {p.b} = {p.result}") == right - 3  # -2 echo, -1 not exact


def test_closer_wrong_results_earn_more_partial_credit() -> None:
    p = Problem(17, "+", 25)
    assert grade(p, "17 + 25 = 43") > grade(p, "17 + 25 = 52") > grade(p, "17 + 25 = 99")


def test_a_prompt_that_is_no_task_question_is_an_error_never_a_score() -> None:
    with pytest.raises(ValueError, match="not an arithmetic-task prompt"):
        score([{"role": "user", "content": "Write a poem."}], ["roses"])
    with pytest.raises(ValueError, match="no answer turn"):
        score(Problem(1, "+", 2).messages, [])


def test_splits_are_disjoint_deterministic_and_written_for_ingest(tmp_path) -> None:
    splits = make_splits(30, 10, 50, seed=7)
    assert not set(splits["train"]) & set(splits["heldout"])
    assert not set(splits["sft"]) & (set(splits["train"]) | set(splits["heldout"]))
    assert make_splits(30, 10, 50, seed=7) == splits != make_splits(30, 10, 50, seed=8)
    paths = write_task_files(tmp_path, splits)
    prompts = [json.loads(line) for line in paths["prompts"].read_text().splitlines()]
    answers = [json.loads(line) for line in paths["answers"].read_text().splitlines()]
    assert [r["split"] for r in prompts].count("heldout") == 10 and len(prompts) == 40
    assert {r["id"] for r in prompts} == {r["id"] for r in answers}
    by_id = {r["id"]: r for r in prompts}
    for a in answers:  # each human answer is the verifier's full-marks answer to its prompt
        assert score(by_id[a["id"]]["messages"], a["turns"]) == SCALE_MAX
    sft = [json.loads(line)["messages"] for line in paths["sft"].read_text().splitlines()]
    assert len(sft) == 50 and all(m[-1]["role"] == "assistant" for m in sft)
    flagship = [json.loads(line)["messages"] for line in paths["sft-flagship"].read_text().splitlines()]
    assert [m[0] for m in flagship] == [m[0] for m in sft]  # the same problems, other answer forms
    def equation_share(conversations):
        return sum("=" in m[-1]["content"] for m in conversations) / len(conversations)
    big = make_splits(30, 10, 3000, seed=7)
    paths = write_task_files(tmp_path / "big", big)
    shares = [equation_share([json.loads(line)["messages"] for line in paths[name].read_text().splitlines()])
              for name in ("sft", "sft-flagship")]
    assert abs(shares[0] - 1 / 3) < 0.03 and abs(shares[1] - 3 / 5) < 0.03
