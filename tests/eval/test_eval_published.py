"""`tso-data eval` reproduces a model's *published* AlpacaEval numbers from that model's
public annotations: text_davinci_001 judged by alpaca_eval_gpt4 against text_davinci_003
(AlpacaEval 1, 805 instructions). The preferences are a derived extract of the annotation
file (tests/data/alpaca_eval/README.md); the published row is read from the leaderboard CSV
that the alpaca_eval package ships, so neither side is typed into this test."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from eval_helpers import write_alpaca_annotations

from tso_data.catalog import Catalog
from tso_data.cli.main import cli

EXTRACT = Path(__file__).resolve().parents[1] / "data" / "alpaca_eval" / "text_davinci_001_alpaca_eval_gpt4.csv"
MODEL, BASELINE, JUDGE = "text_davinci_001", "text_davinci_003", "alpaca_eval_gpt4"
# AlpacaEval 1's evaluation set, in its order: how many instructions each source dataset gives
DATASETS = {"helpful_base": 129, "koala": 156, "oasst": 188, "selfinstruct": 252, "vicuna": 80}


def extract_rows() -> list[dict[str, str]]:
    with open(EXTRACT, newline="") as fh:
        return list(csv.DictReader(fh))


def published_row(model: str) -> dict[str, str]:
    """The model's row of the alpaca_eval_gpt4 leaderboard that the installed alpaca_eval
    ships (found without importing the package, which wants pkg_resources)."""
    spec = importlib.util.find_spec("alpaca_eval")
    assert spec is not None and spec.submodule_search_locations, "alpaca_eval (a dev extra) is not installed"
    board = Path(next(iter(spec.submodule_search_locations))) / "leaderboards" / "data_AlpacaEval" / (
        f"{JUDGE}_leaderboard.csv")
    with open(board, newline="") as fh:
        rows = {row[""]: row for row in csv.DictReader(fh)}
    return rows[model]


def annotations(rows: list[dict[str, str]]) -> list[dict[str, object]]:
    """The extract as an AlpacaEval annotations file. It keeps positions, not texts, so the
    instructions and outputs are stand-ins (one distinct text per record): the win-rate
    statistics do not read them."""
    return [{"instruction": f"AlpacaEval instruction {r['index']}", "dataset": r["dataset"],
             "generator_1": r["generator_1"], "output_1": f"{r['generator_1']} answer {r['index']}",
             "generator_2": r["generator_2"], "output_2": f"{r['generator_2']} answer {r['index']}",
             "annotator": JUDGE, "preference": float(r["preference"]) if r["preference"] else None}
            for r in rows]


def test_the_extract_is_the_whole_evaluation_set_in_order() -> None:
    rows = extract_rows()
    assert [int(r["index"]) for r in rows] == list(range(805))
    assert Counter(r["dataset"] for r in rows) == DATASETS
    assert [r["dataset"] for r in rows] == [name for name, n in DATASETS.items() for _ in range(n)]
    assert {(r["generator_1"], r["generator_2"]) for r in rows} == {(BASELINE, MODEL)}
    assert {r["preference"] for r in rows} <= {"1.0", "2.0", "0.0", ""}


def test_eval_reproduces_the_published_leaderboard_row(catalog: Catalog, tmp_path: Path) -> None:
    path = write_alpaca_annotations(tmp_path / "annotations.json", annotations(extract_rows()))
    runner = CliRunner()
    ingested = runner.invoke(cli, ["ingest", "verdicts", str(path), "-c", str(catalog.root), "--json"],
                             catch_exceptions=False)
    assert ingested.exit_code == 0, ingested.output
    report = json.loads(ingested.output)[0]
    assert (report["records"], report["verdicts"]) == (805, 805)

    result = runner.invoke(cli, ["eval", "-c", str(catalog.root), "--judge", JUDGE, "--baseline", BASELINE,
                                 "--pairwise", "--stored-only", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ours = next(m for m in json.loads(result.output)["models"] if m["model"] == MODEL)
    published = published_row(MODEL)

    for column in ("win_rate", "standard_error", "discrete_win_rate"):  # percentage points
        assert ours[column] == pytest.approx(float(published[column]), abs=0.01), column
    assert (ours["n_wins"], ours["n_losses"], ours["n_draws"], ours["n_pairwise"]) == (
        int(published["n_wins"]), int(published["n_wins_base"]), int(published["n_draws"]),
        int(published["n_total"]))
    # the annotator's one failed record is no preference: counted neither in n nor as a loss
    assert report["unparsed"] == 805 - int(published["n_total"]) == 1
