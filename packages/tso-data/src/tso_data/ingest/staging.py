"""Staging one input file: its rows as DuckDB temp tables in the catalog's types, and the
located checks every kind of file runs on them.

``src`` is the file as read (:mod:`tso_data.ingest.readers`); ``stage`` holds one record per
(row, part) with one column per bound field; ``final_rows`` the rows the write inserts.
Every check names the file, the line or row and the field (docs/design.md, 3. The catalog).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from tso_data.catalog import table_columns
from tso_data.errors import TSODataError, located
from tso_data.ingest.fields import FIELDS
from tso_data.ingest.mapping import TEXT, TEXT_LIST, Binding, Field
from tso_data.ingest.options import IngestOptions
from tso_data.ingest.readers import Source
from tso_data.ingest.report import FileReport
from tso_data.ingest.sql import columns_of, literal, qi
from tso_data.ingest.values import SQL_TYPES, check_value


class StagedFile:
    """One file being ingested: its rows staged as temp tables (``src``, ``stage``), the
    located checks on them, and the final rows the write inserts."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: Path,
        source: Source,
        bindings: dict[str, Binding],
        report: FileReport,
        options: IngestOptions,
    ) -> None:
        self.con = con
        self.path = path
        self.source = source
        self.b = bindings
        self.report = report
        self.options = options
        self.pending_rows = 0  # rows staged for the final INSERTs (stage_final)
        self.final_table = ""

    # -- staging ----------------------------------------------------------------------

    def stage(self) -> None:
        """Register the file as ``src`` and build ``stage``: one record per (row, part)
        with one column per bound field in the catalog's types."""
        wanted: dict[str, str] = {}
        for b in self.b.values():
            for col in b.columns:
                if b.field.is_list:
                    want = TEXT if len(b.columns) > 1 else TEXT_LIST
                else:
                    want = b.field.type
                if wanted.get(col, want) != want:
                    raise TSODataError(f"{self.path}: column '{col}' is mapped to fields of different types")
                wanted[col] = want
        self.n_src = self.source.register(self.con, wanted)
        # list fields: a missing or null item is an error here, where the column is known
        for b in self.b.values():
            if b.field.is_list:
                for col in b.columns:
                    self.fail_if(f"{qi(col)} IS NULL", col, "missing value", table="src")
        parts = {len(b.columns) for b in self.b.values() if not b.field.is_list and len(b.columns) > 1}
        if len(parts) > 1:
            raise TSODataError(f"{self.path}: fields split over several columns "
                               "must all list the same number of columns")
        self.n_parts = parts.pop() if parts else 1
        # Responses can be millions of long texts: their turns stay in `src` (the Parquet
        # file itself, for Parquet) and `stage` keeps only a fingerprint, the number of
        # turns and of empty turns; the texts are read once more, by the final INSERT.
        self.light = self.report.kind == "responses"
        self.light_exprs: dict[str, str] = {}
        selects = []
        for i in range(self.n_parts):
            exprs = ["__row", f"{i} AS __part"]
            for f in FIELDS[self.report.kind]:
                expr = self._expr(f, i)
                if self.light and f.is_list:
                    self.light_exprs[f.name] = expr
                    exprs += [
                        f"hash({expr}) AS {f.name}_fp",
                        f"len({expr}) AS {f.name}_len",
                        f"len(list_filter({expr}, lambda t: trim(t) = '')) AS {f.name}_empty",
                    ]
                    continue
                exprs.append(f"{expr} AS {f.name}")
            exprs.extend(f"{sql} AS {name}" for name, sql in self._extra_exprs().items())
            selects.append(f"SELECT {', '.join(exprs)} FROM src")
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE stage AS {' UNION ALL '.join(selects)}")
        self.report.rows = self.count("stage")

    def _expr(self, f: Field, part: int) -> str:
        b = self.b.get(f.name)
        typ = "VARCHAR[]" if f.is_list else SQL_TYPES[f.type]
        if b is None:
            return f"CAST(NULL AS {typ})"
        if b.constant is not None:
            try:
                value = check_value(b.constant, f.type, from_csv=True)
            except ValueError as exc:
                raise TSODataError(f"--set {f.name}={b.constant}: {exc}") from None
            if f.is_list:
                value = [value] if isinstance(value, str) else value
            return f"CAST({literal(value)} AS {typ})"
        if f.is_list:
            if len(b.columns) > 1:
                return f"list_value({', '.join(qi(c) for c in b.columns)})"
            return qi(b.columns[0])
        return qi(b.columns[part] if len(b.columns) > 1 else b.columns[0])

    def _extra_exprs(self) -> dict[str, str]:
        # A pairwise review row judges several answers: by default each judgment's key
        # names the whole pairing, so the same answer judged in several pairings stays
        # several judgments.
        model = self.b.get("model")
        if self.report.kind == "judgments" and "key" not in self.b and model and len(model.columns) > 1:
            return {"pair_key": "'pair:' || concat_ws(' vs ', " + ", ".join(qi(c) for c in model.columns) + ")"}
        return {}

    # -- located checks -----------------------------------------------------------------

    def label(self, name: str) -> str:
        b = self.b.get(name)
        return b.label if b is not None else name

    def count(self, table: str) -> int:
        row = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def fail_if(self, where: str, field_name: str, message: str, table: str = "stage") -> None:
        """Raise a located error for the first row of ``table`` matching ``where``.

        ``message`` may use {value} (the field's value on that row, when ``field_name``
        is a column of ``table``) and {extra} (the ``__extra`` column, if the table has one).
        """
        has_extra = "{extra" in message
        has_value = "{value" in message
        has_part = table == "stage" or table.startswith("stage_")
        cols = [
            "__row",
            "__extra" if has_extra else "NULL",
            qi(field_name) if has_value else "NULL",
            "__part" if has_part and "__part" in columns_of(self.con, table) else "0",
        ]
        row = self.con.execute(
            f"SELECT {', '.join(cols)} FROM {table} WHERE {where} ORDER BY __row LIMIT 1"
        ).fetchone()
        if row is not None:
            shown = self.label(field_name)
            b = self.b.get(field_name)
            if b is not None and not b.field.is_list and len(b.columns) > 1:
                shown = b.columns[row[3]]
            raise located(self.path, row[0], shown, message.format(extra=row[1], value=row[2]))

    def require(self, name: str, hint: str = "") -> None:
        """The field must be bound and non-null on every row."""
        if name not in self.b:
            f = next(f for f in FIELDS[self.report.kind] if f.name == name)
            tried = ", ".join(repr(c) for c in f.defaults) or "none"
            raise located(
                self.path, self.first_row(), name,
                f"missing (no column {tried}; map one with --map {name}=COLUMN{' or ' + hint if hint else ''})",
            )
        self.fail_if(f"{name} IS NULL", name, "missing value")

    def first_row(self) -> int | None:
        row = self.con.execute("SELECT min(__row) FROM src").fetchone()
        return row[0] if row else None

    def check_choice(self, name: str, choices: Sequence[str]) -> None:
        allowed = ", ".join(f"'{c}'" for c in choices)
        self.fail_if(f"{name} IS NOT NULL AND {name} NOT IN ({allowed})", name, f"{{value!r}} is not one of {allowed}")


    # -- the final rows ------------------------------------------------------------------

    def stage_final(self, table: str, new_rows_sql: str, unique: int) -> None:
        """The rows to insert, numbered, read while the catalog is still only read: under
        the write lock only the INSERTs run (:meth:`write_rows`)."""
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE final_rows AS "
            f"SELECT *, row_number() OVER () - 1 AS __n FROM ({new_rows_sql})"
        )
        self.final_table = table
        self.report.new = self.pending_rows = self.count("final_rows")
        self.report.existing = unique - self.report.new

    def write_rows(self, start: int, stop: int) -> int:
        """Insert final rows ``start <= __n < stop`` (inside the caller's write transaction)."""
        cols = ", ".join(table_columns(self.con, self.final_table))
        rows = self.con.execute(
            f"INSERT INTO {self.final_table} ({cols}) SELECT {cols} FROM final_rows "
            f"WHERE __n >= {int(start)} AND __n < {int(stop)}"
        ).fetchall()
        return int(rows[0][0]) if rows else 0
