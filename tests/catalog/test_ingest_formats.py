"""The same rows from JSONL, CSV, Parquet and a saved HF dataset give the same catalog
rows; --map/--set, multi-turn prompts, feedback and the python API."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tso_data import ids
from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.ingest import ingest_files
from tso_data.matrix import add_model

ROWS = [
    {"qid": 1, "model": "m-v1-7b", "answer": "first"},
    {"qid": 2, "model": "m-v1-7b", "answer": "second, with a comma"},
]


@pytest.fixture()
def base(catalog: Catalog, tmp_path: Path) -> Catalog:
    add_model(catalog, "m-v1-7b", family="m", version="1", size_b=7)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"qid": 1, "text": "one"}\n{"qid": 2, "text": "two"}\n', encoding="utf-8")
    ingest_files(catalog, "prompts", [prompts], mapping={"prompt": "text", "external_id": "qid"})
    return catalog


def _write(fmt: str, path: Path) -> Path:
    table = pa.Table.from_pylist(ROWS)
    if fmt == "jsonl":
        path = path.with_suffix(".jsonl")
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        path = path.with_suffix(".csv")
        pcsv.write_csv(table, path)
    elif fmt == "parquet":
        path = path.with_suffix(".parquet")
        pq.write_table(table, path)
    else:
        import datasets

        datasets.Dataset(table).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "hf"])
def test_every_format_gives_the_same_rows(base: Catalog, tmp_path: Path, fmt: str) -> None:
    path = _write(fmt, tmp_path / f"resp-{fmt}")
    report = ingest_files(base, "responses", [path], mapping={"prompt": "qid", "turns": "answer"})
    assert report.new == 2 and report.files[0].format == fmt
    rows = base.arrow(
        "SELECT p.external_id, r.turns FROM responses r JOIN prompts p USING (prompt_id) ORDER BY 1"
    ).to_pylist()
    assert rows == [{"external_id": "1", "turns": ["first"]}, {"external_id": "2", "turns": ["second, with a comma"]}]
    again = ingest_files(base, "responses", [path], mapping={"prompt": "qid", "turns": "answer"})
    assert again.new == 0 and again.files[0].existing == 2


def test_multi_turn_prompts_and_answers(catalog: Catalog, tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"question_id": 81, "turn_1": "Write a poem.", "turn_2": "Now shorter."}) + "\n",
                 encoding="utf-8")
    ingest_files(catalog, "prompts", [f], constants={"source": "mt"})  # turn_1, turn_2 found by name
    row = catalog.arrow("SELECT messages, n_turns, external_id FROM prompts").to_pylist()[0]
    assert row["n_turns"] == 2 and row["external_id"] == "81"
    assert [m["content"] for m in row["messages"]] == ["Write a poem.", "Now shorter."]
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"question_id": 81, "turn_1": "Roses...", "turn_2": "Rose."}) + "\n", encoding="utf-8")
    ingest_files(catalog, "answers", [a], mapping={"turns": "turn_1,turn_2"})
    assert catalog.arrow("SELECT turns FROM answers").to_pylist() == [{"turns": ["Roses...", "Rose."]}]
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"question_id": 81, "answer": "only one turn"}) + "\n", encoding="utf-8")
    with pytest.raises(TSODataError, match=r"one.jsonl:1: field 'answer': 1 turn\(s\) given, the prompt has 2"):
        ingest_files(catalog, "answers", [one])


def test_feedback_targets_must_exist(base: Catalog, tmp_path: Path) -> None:
    path = _write("jsonl", tmp_path / "r")
    ingest_files(base, "responses", [path], mapping={"prompt": "qid", "turns": "answer"})
    fb = tmp_path / "fb.jsonl"
    fb.write_text(
        json.dumps({"qid": 1, "model": "m-v1-7b", "score": 3, "rationale": "wrong"}) + "\n"
        + json.dumps({"qid": 2, "model": "m-v1-7b", "score": 9, "rationale": "right", "split": "heldout"}) + "\n",
        encoding="utf-8",
    )
    report = ingest_files(base, "feedback", [fb], mapping={"prompt": "qid"}, constants={"annotator": "human:ana"})
    assert report.new == 2
    rows = base.arrow("SELECT feedback_id, target_id, rubric, annotator, score, rationale, split "
                      "FROM feedback ORDER BY score").to_pylist()
    assert [r["split"] for r in rows] == ["train", "heldout"]
    assert all(r["feedback_id"] == ids.feedback_id(r["target_id"], r["rubric"], r["annotator"], r["score"],
                                                   r["rationale"]) for r in rows)
    assert ingest_files(base, "feedback", [fb], mapping={"prompt": "qid"},
                        constants={"annotator": "human:ana"}).new == 0
    missing = tmp_path / "fb2.jsonl"
    missing.write_text(json.dumps({"target_id": "0123456789abcdef", "score": 3, "annotator": "human"}) + "\n",
                       encoding="utf-8")
    with pytest.raises(TSODataError, match="fb2.jsonl:1: field 'target_id': no response or answer with id"):
        ingest_files(base, "feedback", [missing])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30).filter(lambda s: s.strip()), min_size=1, max_size=3))
def test_sql_prompt_ids_equal_python_ids(texts: list[str]) -> None:
    """Ids computed in DuckDB (with the Python patch for escaped characters) equal ids.prompt_id."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        catalog = Catalog.init(Path(d) / "c")
        f = Path(d) / "p.jsonl"
        f.write_text(json.dumps({"turns": texts}) + "\n", encoding="utf-8")
        ingest_files(catalog, "prompts", [f])
        row = catalog.arrow("SELECT prompt_id, messages FROM prompts").to_pylist()[0]
        assert row["prompt_id"] == ids.prompt_id([{"role": "user", "content": t} for t in texts])


def test_judgments_by_target_id_and_unparsed_scores(base: Catalog, tmp_path: Path) -> None:
    path = _write("jsonl", tmp_path / "r")
    ingest_files(base, "responses", [path], mapping={"prompt": "qid", "turns": "answer"})
    targets = base.arrow("SELECT response_id FROM responses ORDER BY response_id").column("response_id").to_pylist()
    f = tmp_path / "j.jsonl"
    f.write_text(
        json.dumps({"target_id": targets[0], "score": 7.5, "raw_text": "fine. Score: 7.5"}) + "\n"
        + json.dumps({"target_id": targets[1], "score": None, "raw_text": "I cannot rate this."}) + "\n",
        encoding="utf-8",
    )
    report = ingest_files(base, "judgments", [f], constants={"judge": "j1", "rubric": "factuality"})
    assert report.new == 2 and report.files[0].not_ok == 1
    rows = base.arrow("SELECT target_id, status, score, rubric, judge, raw_text "
                      "FROM judgments ORDER BY target_id").to_pylist()
    assert [(r["status"], r["score"]) for r in rows] == [("ok", 7.5), ("unparsed", None)]
    assert rows[1]["raw_text"] == "I cannot rate this." and {r["rubric"] for r in rows} == {"factuality"}
    # the same judgment with another score is a conflict, not a silent second row
    g = tmp_path / "j2.jsonl"
    g.write_text(json.dumps({"target_id": targets[0], "score": 3, "raw_text": "fine. Score: 7.5"}) + "\n",
                 encoding="utf-8")
    with pytest.raises(TSODataError, match="j2.jsonl:1: field 'judgment_id': the catalog already holds"):
        ingest_files(base, "judgments", [g], constants={"judge": "j1", "rubric": "factuality"})
    # with --scale none, a 0 is a real score
    h = tmp_path / "j3.jsonl"
    h.write_text(json.dumps({"target_id": targets[1], "score": 0, "key": "second"}) + "\n", encoding="utf-8")
    ingest_files(base, "judgments", [h], constants={"judge": "j1"}, scale=None)
    assert base.scalar("SELECT score FROM judgments WHERE status = 'ok' AND score = 0") == 0
