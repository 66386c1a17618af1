"""Which models a leaderboard shows, checked against the catalog before anything runs, and
the instruction difficulties a user gives in a file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl

from tso_data.errors import TSODataError, located
from tso_data.eval.data import judged_sources
from tso_data.ids import prompt_id as make_prompt_id

DIFFICULTY_COLUMNS = ("difficulty", "instruction_difficulty")
KEY_COLUMNS = ("prompt_id", "instruction", "external_id", "index")


def resolve_models(con: duckdb.DuckDBPyConnection, judge: str, models: Sequence[str] = (),
                   family: str | None = None, baseline: str | None = None) -> tuple[str, ...]:
    """The models to show, in the order given (``--models``), or the family's cells by
    version and size (``--family``), or every source the judge has judged; the baseline
    is added when missing. Every name must be a registered model."""
    known = {row[0]: row for row in con.execute(
        "SELECT name, family, version_order, size_b FROM models").fetchall()}
    if models and family:
        raise TSODataError("choose the models with --models or --family, not both")
    if models:
        names = list(dict.fromkeys(models))
    elif family:
        cells = [row for row in known.values() if row[1] == family]
        if not cells:
            families = sorted({row[1] for row in known.values() if row[1]})
            raise TSODataError(f"--family {family!r}: no models of that family "
                               f"(families: {', '.join(families) or 'none'})")
        cells.sort(key=lambda row: (row[2] is None, row[2] or 0, row[3] or 0.0, row[0]))
        names = [row[0] for row in cells]
    else:
        names = judged_sources(con, judge)
        if not names:
            raise TSODataError(f"judge {judge!r} has judged nothing here; name the models with --models")
    if baseline is not None and baseline not in names:
        names.append(baseline)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TSODataError(f"unknown model(s) {', '.join(map(repr, unknown))} "
                           f"(known: {', '.join(sorted(known)) or 'none'})")
    return tuple(names)


def answers_on_split(con: duckdb.DuckDBPyConnection, models: Sequence[str], split: str) -> dict[str, int]:
    """Per model: the split's prompts it has at least one answer to (responses or human answers)."""
    rows = con.execute(
        "WITH texts AS (SELECT model AS source, prompt_id FROM responses UNION ALL "
        "SELECT source, prompt_id FROM answers) "
        "SELECT source, count(DISTINCT prompt_id) FROM texts "
        "WHERE list_contains($models, source) AND prompt_id IN (SELECT prompt_id FROM prompts WHERE split = $split) "
        "GROUP BY source", {"models": list(models), "split": split}).fetchall()
    counts = dict.fromkeys(models, 0)
    counts.update({source: int(n) for source, n in rows})
    return counts


def has_answers(con: duckdb.DuckDBPyConnection, model: str, split: str) -> bool:
    """Whether ``model`` answered any prompt of ``split`` (a cheap check for the baseline)."""
    return bool(con.execute(
        "SELECT EXISTS (SELECT 1 FROM responses r JOIN prompts p USING (prompt_id) "
        "               WHERE r.model = $m AND p.split = $s) "
        "OR EXISTS (SELECT 1 FROM answers a JOIN prompts p USING (prompt_id) WHERE a.source = $m AND p.split = $s)",
        {"m": model, "s": split}).fetchall()[0][0])


def check_split(con: duckdb.DuckDBPyConnection, split: str) -> int:
    """The number of prompts in ``split``; an error when there are none."""
    n = int(con.execute("SELECT count(*) FROM prompts WHERE split = ?", [split]).fetchall()[0][0])
    if n == 0:
        splits = [r[0] for r in con.execute("SELECT DISTINCT split FROM prompts ORDER BY 1").fetchall()]
        raise TSODataError(f"--split {split!r}: no prompts in that split "
                           f"(splits here: {', '.join(map(str, splits)) or 'none'})")
    return n


def read_difficulty(con: duckdb.DuckDBPyConnection, path: Path, prompt_source: str | None = None) -> pl.DataFrame:
    """``prompt_id, difficulty`` from a file (CSV, JSONL, JSON or Parquet) with a
    ``difficulty`` (or AlpacaEval's ``instruction_difficulty``) column and a key: a
    ``prompt_id``, the ``instruction`` text, or an ``external_id`` / ``index`` matched
    against ``prompts.external_id`` (AlpacaEval's ``instruction_difficulty.csv`` is keyed
    by ``index``, the instruction's position in its evaluation set). Rows whose key matches
    no prompt are skipped."""
    frame = _read_table(path)
    value = next((c for c in DIFFICULTY_COLUMNS if c in frame.columns), None)
    key = next((c for c in KEY_COLUMNS if c in frame.columns), None)
    if value is None or key is None:
        raise located(path, None, None, f"expected a difficulty column ({' or '.join(DIFFICULTY_COLUMNS)}) and a key "
                                        f"({', '.join(KEY_COLUMNS)}); found {', '.join(frame.columns)}")
    values = frame.get_column(value).cast(pl.Float64, strict=False)
    bad = values.is_null() | values.is_nan()
    if bad.any():
        row = int(bad.arg_max()) + 2 if path.suffix == ".csv" else int(bad.arg_max()) + 1
        raise located(path, row, value, "expected a number")
    keys = frame.get_column(key).cast(pl.String)
    if key == "instruction":
        ids = [make_prompt_id([{"role": "user", "content": k}]) for k in keys.to_list()]
        given = pl.DataFrame({"prompt_id": ids, "difficulty": values})
    elif key == "prompt_id":
        given = pl.DataFrame({"prompt_id": keys, "difficulty": values})
    else:
        given = pl.DataFrame({"external_id": keys, "difficulty": values})
        sql = "SELECT prompt_id, external_id FROM prompts WHERE external_id IS NOT NULL"
        params: list[object] = []
        if prompt_source is not None:
            sql += " AND source = ?"
            params.append(prompt_source)
        lookup = pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())
        given = given.join(lookup, on="external_id", how="inner").select("prompt_id", "difficulty")  # type: ignore[union-attr]
    return given.unique("prompt_id", keep="first")


def _read_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise located(path, None, None, "file not found")
    try:
        if path.suffix == ".csv":
            return pl.read_csv(path)
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix == ".jsonl":
            return pl.read_ndjson(path)
        if path.suffix == ".json":
            return pl.read_json(path)
    except Exception as exc:  # a malformed file: one line naming it
        raise located(path, None, None, f"cannot read: {str(exc).splitlines()[0]}") from None
    raise located(path, None, None, "expected a .csv, .jsonl, .json or .parquet file")
