"""Row identity: content-hash ids computed in SQL, the check that one id never names two
contents (inside the file and against the catalog), and the rows the catalog still lacks.

Ids are those of :mod:`tso_data.ids` (docs/design.md, 3. The catalog): re-ingesting a file
adds nothing, and a different text under a known id is an error, never an overwrite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import duckdb
import pyarrow as pa

from tso_data import ids
from tso_data.ingest.staging import StagedFile
from tso_data.schema import key_of


def dedupe(
    job: StagedFile, key: str, content: Sequence[str], table: str, hint: str = "", stage_fp: str | None = None
) -> str:
    """Check that rows sharing ``key`` share their ``content`` columns, inside the file
    and against the catalog ``table``; count in-file duplicates; return the SQL of
    the unique rows (the first of each key)."""
    con = job.con

    def fingerprint(alias: str) -> str:
        if alias == "s" and stage_fp is not None:
            return f"s.{stage_fp}"  # the same hash, computed when staging
        return "hash(" + ", ".join(f"{alias}.{c}" for c in content) + ")"

    con.execute(
        f"CREATE OR REPLACE TEMP TABLE firsts AS SELECT {key}, min(__row) AS first_row, "
        f"arg_min({fingerprint('s')}, __row * 1000 + __part) AS fp FROM stage s GROUP BY {key}"
    )
    unique = job.count("firsts")
    job.report.duplicates = job.report.rows - unique
    if job.report.duplicates:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT s.__row, f.first_row AS __extra, s.{key} "
            f"FROM stage s JOIN firsts f USING ({key}) WHERE {fingerprint('s')} <> f.fp"
        )
        job.fail_if(
            "true", key,
            f"same {key} {{value}} as line/row {{extra}} but different content{hint}",
            table="stage_bad",
        )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT f.first_row AS __row, f.{key} FROM firsts f "
        f"JOIN {table} t USING ({key}) WHERE {fingerprint('t')} <> f.fp"
    )
    job.fail_if(
        "true", key,
        f"the catalog already holds {key} {{value}} with different content{hint}",
        table="stage_bad",
    )
    if job.report.duplicates:
        return f"SELECT * FROM stage QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY __row, __part) = 1"
    return "SELECT * FROM stage"


def stage_new_rows(job: StagedFile, table: str, select_sql: str, unique: int) -> None:
    """Stage the rows of ``select_sql`` (the table's columns, unique keys) that ``table``
    lacks as the file's final rows; :meth:`StagedFile.write_rows` inserts them."""
    key = key_of(table)
    job.stage_final(
        table,
        f"SELECT * FROM ({select_sql}) AS src WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.{key} = src.{key})",
        unique,
    )


def patch_python_ids(
    con: duckdb.DuckDBPyConnection,
    id_col: str,
    json_col: str,
    fn: Callable[[object], str] | None,
    answer_args: bool = False,
) -> None:
    """DuckDB's JSON writes control characters as upper-case \\u escapes where Python's
    json writes lower case; recompute the (rare) rows whose JSON has a \\u escape in Python
    so SQL-computed ids always equal :mod:`tso_data.ids`."""
    suspicious = f"regexp_matches(to_json({json_col}), '\\\\u[0-9A-Fa-f]{{4}}')"
    cols = "__row, __part, " + (f"prompt_id, source, {json_col}" if answer_args else json_col)
    rows = con.sql(f"SELECT {cols} FROM stage WHERE {suspicious}").to_arrow_table().to_pylist()
    if not rows:
        return
    if answer_args:
        new_ids = [ids.answer_id(r["prompt_id"], r["source"], r[json_col]) for r in rows]
    else:
        assert fn is not None
        new_ids = [fn(r[json_col]) for r in rows]
    patch = pa.table({"__row": [r["__row"] for r in rows], "__part": [r["__part"] for r in rows], "new_id": new_ids})
    con.register("id_patch", patch)
    con.execute(
        f"UPDATE stage SET {id_col} = id_patch.new_id FROM id_patch "
        "WHERE stage.__row = id_patch.__row AND stage.__part = id_patch.__part"
    )
    con.unregister("id_patch")
