"""Rubrics as data: shipped ones load, user ones override, bad files fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tso_data.errors import TSODataError
from tso_data.judge.rubrics import SHIPPED_DIR, available_rubrics, load_rubric, resolve_rubrics, rubric_dirs

GOOD = '''
name = "helpfulness"
version = "2"
description = "Does it help?"
[scale]
min = 0
max = 5
[prompt]
system = "Grade {dimension} from {scale_min} to {scale_max}. End with Score: <number>."
user = "Q: {question}\\n{reference_block}A: {answer}"
reference_block = "Reference: {reference}\\n"
'''


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_rubrics_are_the_papers_four_dimensions_and_overall() -> None:
    rubrics = available_rubrics([SHIPPED_DIR])
    assert set(rubrics) == {"factuality", "conciseness", "logic", "comprehension", "overall"}
    for rubric in rubrics.values():
        system, user = rubric.render("Why is the sky blue?", "Rayleigh scattering.", None)
        assert "Score: <number>" in system["content"]
        assert "Why is the sky blue?" in user["content"] and "Rayleigh scattering." in user["content"]
        assert "{" not in user["content"] and "{" not in system["content"]


def test_render_fills_slots_and_optional_reference(tmp_path: Path) -> None:
    rubric = load_rubric(write(tmp_path, GOOD))
    assert (rubric.scale_min, rubric.scale_max, rubric.version) == (0.0, 5.0, "2")
    system, user = rubric.render("q?", "a {with braces}", None)
    assert system["content"] == "Grade helpfulness from 0 to 5. End with Score: <number>."
    assert user["content"] == "Q: q?\nA: a {with braces}"
    assert rubric.render("q?", "a", "ref")[1]["content"] == "Q: q?\nReference: ref\nA: a"


def test_user_directory_overrides_shipped_by_name(tmp_path: Path) -> None:
    (tmp_path / "catalog" / "rubrics").mkdir(parents=True)
    write(tmp_path / "catalog" / "rubrics", GOOD.replace('"helpfulness"', '"overall"'), "overall.toml")
    rubrics = resolve_rubrics(["overall", "logic"], rubric_dirs(tmp_path / "catalog"))
    assert rubrics[0].scale_max == 5.0 and rubrics[0].version == "2"
    assert rubrics[1].source.startswith(str(SHIPPED_DIR))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("[scale]\nmin = 0\nmax = 5\n", ""), "field 'scale': missing"),
        (GOOD.replace("max = 5", ""), "field 'scale.max': missing"),
        (GOOD.replace("max = 5", "max = 0"), "min (0) must be below max (0)"),
        (GOOD.replace("max = 5", 'max = "ten"'), "field 'scale.max': expected a finite number"),
        (GOOD.replace("A: {answer}", "A: (none)"), "template has no {answer} slot"),
        (GOOD.replace("Q: {question}", "Q: {questoin}"), "unknown slot(s) {questoin}"),
        (GOOD.replace("Reference: {reference}", "Reference: {answer}"),
         "field 'prompt.reference_block': unknown slot(s) {answer}"),
        (GOOD.replace("Grade {dimension}", "Grade {dimension"), "bad template"),
        (GOOD.replace('name = "helpfulness"', 'name = "two words"'), "field 'name'"),
        ("name = [", "not valid TOML"),
    ],
)
def test_bad_rubric_files_fail_with_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TSODataError) as err:
        load_rubric(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_rubric_name_lists_the_known_ones() -> None:
    with pytest.raises(TSODataError, match="unknown rubric.*available: comprehension, conciseness"):
        resolve_rubrics(["helpfulness"], rubric_dirs())
