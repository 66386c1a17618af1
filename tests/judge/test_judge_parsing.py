"""Score extraction over real judge texts and adversarial ones."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tso_data.judge.parsing import parse_pairwise, parse_score

# (judge text, scale, expected score or None, substring of the reason)
SINGLE_CASES = [
    ("The answer is right and concise.\nScore: 8.5", (1, 10), 8.5, "Score: 8.5"),
    ("Solid.\nScore: **8**", (1, 10), 8.0, ""),
    ("**Score:** 6", (1, 10), 6.0, ""),
    ("**Score**: 6", (1, 10), 6.0, ""),
    ("score = 4", (1, 10), 4.0, ""),
    ("Rating: 7", (1, 10), 7.0, ""),
    ("The response is accurate. Rating: [[9]]", (1, 10), 9.0, ""),
    ("[[8]]", (1, 10), 8.0, ""),
    ("Overall 8/10", (1, 10), 8.0, ""),
    ("Overall 4/5", (1, 5), 4.0, ""),
    ("I would rate this 7 out of 10.", (1, 10), 7.0, ""),
    ("Score (1-10): 6", (1, 10), 6.0, ""),
    ("Final score: 3.", (1, 10), 3.0, ""),
    ("SCORE: 10", (1, 10), 10.0, ""),
    ("Score: 1", (1, 10), 1.0, ""),
    # echoed example from the prompt, then the verdict: last wins
    ('Reply format: "Score: 5". My assessment: weak logic.\nScore: 2', (1, 10), 2.0, "Score: 2"),
    ('Strictly follow this format: "[[rating]]", e.g. "Rating: [[5]]".\nGood answer. Rating: [[9]]', (1, 10), 9.0, ""),
    # the prompt's placeholder is not a score
    ('End with "Score: <number>".', (1, 10), None, "no score found"),
    # two scores: the last claim wins
    ("Score: 7\nOn reflection the second half is wrong.\nScore: 4", (1, 10), 4.0, "Score: 4"),
    # out of range: unparsed, never clipped, never the earlier claim
    ("Score: 7\nActually, Score: 11", (1, 10), None, "outside the scale"),
    ("Rating: [[0]]", (1, 10), None, "outside the scale"),
    ("Score: -3", (1, 10), None, "outside the scale"),
    ("Score: 9/5", (1, 5), None, "outside the scale"),
    # a claim on another scale
    ("Score: 4/5", (1, 10), None, "not on the scale"),
    # fractions that are not scores are ignored
    ("Mix 1/2 cup flour and 3/4 cup sugar. Score: 6", (1, 10), 6.0, ""),
    ("Mix 1/2 cup flour.", (1, 10), None, "no score found"),
    ("Dates like 12/10/2023 are not scores.", (1, 10), None, "no score found"),
    # ambiguous and missing
    ("Score: 7-8", (1, 10), None, "ambiguous"),
    ("Score: 7 or 8", (1, 10), None, "ambiguous"),
    ("The scores are good.", (1, 10), None, "no score found"),
    ("", (1, 10), None, "no text"),
    ("Scores: high", (1, 10), None, "no score found"),
    # non-ASCII text before the score (lower-casing changes length for some letters)
    ("İstanbul answer, well done. Score: 7", (1, 10), 7.0, ""),
]


@pytest.mark.parametrize(("text", "scale", "expected", "reason"), SINGLE_CASES)
def test_single_score_table(text: str, scale: tuple[int, int], expected: float | None, reason: str) -> None:
    result = parse_score(text, *scale)
    assert result.score == expected, result
    assert result.status == ("ok" if expected is not None else "unparsed")
    assert reason in result.reason


def test_mt_bench_rating_format_over_real_prompt_templates(shared_data) -> None:
    """MT-Bench single-answer judge prompts show '[[rating]]' and an example 'Rating: [[5]]';
    a judge that echoes the whole system prompt and then rates must get its own rating."""
    prompts = [json.loads(line) for line in open(shared_data / "mt_bench" / "judge_prompts.jsonl")]
    single = [p for p in prompts if p["type"] == "single"]
    assert single, "expected single-answer judge prompts in the MT-Bench file"
    for p in single:
        instructions = p["system_prompt"] + "\n" + p["prompt_template"]
        assert "[[rating]]" in instructions
        # a judge that echoes the instructions (with their example 'Rating: [[5]]') and then rates
        echoed = instructions + "\n\nThe assistant's answer is accurate and complete.\nRating: [[8]]"
        assert parse_score(echoed, 1, 10).score == 8.0
        # the bare '[[rating]]' placeholder is never a score; the example alone is the echo hazard
        assert parse_score('format: "[[rating]]"', 1, 10).status == "unparsed"
        assert parse_score(instructions, 1, 10).score == 5.0


def _vicuna_rows(shared_data):
    return [json.loads(line) for line in open(shared_data / "vicuna_eval_gpt4_review" / "judgments.jsonl")]


def test_pairwise_parser_matches_gpt4_score_columns(shared_data) -> None:
    """All 1,040 FastChat GPT-4 reviews: parsed review_text vs the score_1/score_2 columns.

    Known and checked by eye: two math reviews (question 70) whose text says
    'Assistant 1: 10 / Assistant 2: 4' while the columns say (10, 2): the columns, not the
    parser, disagree with the text. Four rows score a missing answer 0 (outside 1-10).
    """
    rows = _vicuna_rows(shared_data)
    assert len(rows) == 1040
    mismatches = []
    for row in rows:
        parsed = parse_pairwise(row["review_text"], 0, 10)
        if parsed.scores != (row["score_1"], row["score_2"]):
            mismatches.append((row["question_id"], parsed.scores, (row["score_1"], row["score_2"])))
    assert mismatches == [(70, (10.0, 4.0), (10.0, 2.0)), (70, (10.0, 4.0), (10.0, 2.0))]
    for row in rows:
        if row["question_id"] == 70 and row["score_2"] == 2.0 and "Assistant 2: 4" in row["review_text"]:
            assert "Assistant 2: 2" not in row["review_text"]


def test_pairwise_zero_scores_are_unparsed_on_a_one_to_ten_scale(shared_data) -> None:
    zero_rows = [r for r in _vicuna_rows(shared_data) if 0 in (r["score_1"], r["score_2"])]
    assert len(zero_rows) == 4
    for row in zero_rows:
        parsed = parse_pairwise(row["review_text"], 1, 10)
        assert parsed.scores is None and parsed.status == "unparsed"
        assert "outside the scale" in parsed.reason


def test_pairwise_first_line_forms() -> None:
    assert parse_pairwise("9 8\nexplanation", 1, 10).scores == (9.0, 8.0)
    assert parse_pairwise("  7.5 6\n", 1, 10).scores == (7.5, 6.0)
    assert parse_pairwise("9, 10", 1, 10).scores == (9.0, 10.0)
    assert parse_pairwise("11 8\n", 1, 10).status == "unparsed"
    assert parse_pairwise("9\nonly one score", 1, 10).scores is None


@given(
    prose=st.text(alphabet=st.characters(blacklist_categories=("Nd",), blacklist_characters="[]/"), max_size=200),
    value=st.integers(min_value=1, max_value=10),
)
def test_a_trailing_score_line_always_wins(prose: str, value: int) -> None:
    """Any digit-free prose followed by 'Score: v' parses to v."""
    assert parse_score(f"{prose}\nScore: {value}", 1, 10).score == float(value)


@given(text=st.text(max_size=300), lo=st.integers(-5, 5), width=st.integers(1, 20))
def test_never_a_number_outside_the_scale(text: str, lo: int, width: int) -> None:
    """Whatever the text: either ok with a score inside the scale, or unparsed with None."""
    hi = lo + width
    result = parse_score(text, lo, hi)
    if result.status == "ok":
        assert result.score is not None and lo <= result.score <= hi
    else:
        assert result.status == "unparsed" and result.score is None and result.reason
