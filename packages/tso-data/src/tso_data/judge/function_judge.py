"""Function judges: a Python callable ``fn:module:function`` scores answers in-process, no
model call (exact-match verifiers and the like). Its rows go to the ``judgments`` table like a
model judge's (:mod:`tso_data.judge.run`); a function that raises, or returns something that
is not a number on the rubric's scale, gives that row status ``error``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable

import pyarrow as pa

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.ids import content_hash
from tso_data.judge.rubrics import Rubric
from tso_data.judge.run import JUDGMENT_SCHEMA, Item, JudgeSummary, judgment_row
from tso_data.redact import redact
from tso_data.shards import merge_shards, write_shard

FUNCTION_PREFIX = "fn:"

JudgeFunction = Callable[[list[dict[str, str]], list[str], "list[str] | None"], object]


def load_function_judge(spec: str) -> tuple[JudgeFunction, str | None]:
    """``fn:module:function`` -> (callable, version).

    The version is the module's ``__version__`` if it has one, else a hash of the
    function's source, so a changed function is visible in the stored rows.
    """
    body = spec[len(FUNCTION_PREFIX):] if spec.startswith(FUNCTION_PREFIX) else spec
    module_name, _, func_name = body.rpartition(":")
    if not module_name or not func_name:
        raise TSODataError(f"--judge {spec!r}: expected fn:module:function, e.g. fn:my_pkg.verifiers:exact_match")
    if os.getcwd() not in sys.path:  # let users point at a module in the current directory
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise TSODataError(f"--judge {spec!r}: cannot import module {module_name!r}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise TSODataError(f"--judge {spec!r}: module {module_name!r} has no callable {func_name!r}")
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            version = "src:" + content_hash("fn", inspect.getsource(func))
        except (OSError, TypeError):
            version = None
    return func, None if version is None else str(version)


def _function_outcome(value: object, rubric: Rubric) -> tuple[float | None, str | None, str]:
    """(score, raw_text, status) from a function judge's return value."""
    rationale: str | None = None
    if isinstance(value, tuple):
        if len(value) != 2:
            return None, f"returned a tuple of {len(value)} items; expected (score, rationale)", "error"
        value, rationale_obj = value
        rationale = None if rationale_obj is None else str(rationale_obj)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"returned {type(value).__name__} {value!r}; expected a number", "error"
    score = float(value)
    if not math.isfinite(score):
        return None, f"returned {score!r}; expected a finite number", "error"
    if not rubric.scale_min <= score <= rubric.scale_max:
        return None, (
            f"returned {score:g}, outside the scale of rubric {rubric.name!r}: "
            f"{rubric.scale_min:g}-{rubric.scale_max:g}"
        ), "error"
    return score, rationale, "ok"


def run_function_judge(
    catalog: Catalog,
    items: list[Item],
    func: JudgeFunction,
    *,
    judge: str,
    judge_version: str | None,
    summary: JudgeSummary,
    on_result: Callable[[], None] | None = None,
    flush_every: int = 1024,
) -> JudgeSummary:
    """Score ``items`` with a Python callable ``(prompt_messages, answer_turns, reference)``.

    A function that raises gives status ``error`` with the exception in ``raw_text``.
    """
    writer = _ShardWriter(catalog, flush_every)
    try:
        for item in items:
            item.attempts += 1
            summary.calls += 1
            try:
                value = func([dict(m) for m in item.prompt_messages], list(item.turns), item.reference)
            except Exception as exc:  # a user's function: any failure is that row's error
                message = redact(f"{type(exc).__name__}: {exc}")
                score, raw, status = None, message, "error"
            else:
                score, raw, status = _function_outcome(value, item.rubric)
            if status == "error":
                summary.errors[(raw or "")[:200]] += 1
            summary.statuses[status] += 1
            writer.add(judgment_row(item, judge, judge_version, raw, score, status))
            if on_result is not None:
                on_result()
    finally:
        writer.flush()
        merge_shards(catalog, "judgments", replace=True)
    return summary


class _ShardWriter:
    """Buffers judgment rows and flushes them as atomic shards."""

    def __init__(self, catalog: Catalog, flush_every: int) -> None:
        self.catalog = catalog
        self.flush_every = max(1, flush_every)
        self.rows: list[dict[str, object]] = []

    def add(self, row: dict[str, object]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            write_shard(self.catalog, "judgments", pa.Table.from_pylist(self.rows, schema=JUDGMENT_SCHEMA))
            self.rows = []
