"""Writing a benchmark's result JSON: the numbers plus the environment they were measured in
(library versions, cores, load), so a later run that differs can be traced to what changed."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("duckdb", "polars", "pyarrow", "numpy", "torch", "transformers", "deepspeed", "trl", "openai")


def environment() -> dict[str, Any]:
    """Python, the libraries' installed versions (None where missing), cores and load average.

    >>> env = environment()
    >>> sorted(env) == ["cpus", "libraries", "load_average_1m", "platform", "python"]
    True
    >>> set(env["libraries"]) == set(LIBRARIES)
    True
    """
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0], "libraries": versions}


def write_result(path: Path, result: dict[str, Any]) -> None:
    """``result`` with an ``environment`` entry, as indented JSON, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**result, "environment": environment()}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
