"""benchmarks/results_file.py, through which the CPU benchmarks write their results: the numbers
plus the environment they were measured in, written atomically."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from benchmarks.results_file import LIBRARIES, write_result


def test_a_result_carries_its_environment_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "results" / "area.json"
    write_result(path, {"ratio": 2.5})
    written = json.loads(path.read_text())
    assert written["ratio"] == 2.5
    env = written["environment"]
    assert env["libraries"]["duckdb"] == metadata.version("duckdb")
    assert set(env["libraries"]) == set(LIBRARIES)
    assert env["cpus"] >= 1 and env["load_average_1m"] >= 0
    assert [p.name for p in path.parent.iterdir()] == ["area.json"]

