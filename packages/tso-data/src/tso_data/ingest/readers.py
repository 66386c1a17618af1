"""Read an input file into DuckDB as a relation ``src`` with a ``__row`` column.

Formats (chosen by extension; a directory is a saved HF ``datasets`` dataset):

- ``.jsonl`` / ``.json`` (one object per line) and ``.csv``: parsed in Python, so a
  malformed line, non-UTF-8 bytes or a value of the wrong type is reported with its line.
  ``__row`` is the 1-based line number.
- ``.parquet`` and HF datasets directories: read by DuckDB / Arrow column-wise, no
  per-row Python; a column of the wrong type is reported with the first row that has a
  value. ``__row`` is the 1-based row number.

Converting values to the catalog's types: :mod:`tso_data.ingest.values`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from tso_data.errors import TSODataError, located
from tso_data.ingest.sql import literal, qi
from tso_data.ingest.values import column_expr, json_type, rows_to_arrow

ProgressFn = Callable[[int, int], None]  # (done, total) in bytes


@dataclass
class Source:
    """An input file, opened far enough to know its columns."""

    path: Path
    format: str  # 'jsonl' | 'csv' | 'parquet' | 'hf'
    columns: list[str]
    rows: list[tuple[int, dict[str, object]]] | None = None  # jsonl / csv
    table: pa.Table | None = None  # hf
    notes: list[str] = field(default_factory=list)

    def register(self, con: duckdb.DuckDBPyConnection, wanted: dict[str, str]) -> int:
        """Create view/table ``src`` with ``__row`` and the ``wanted`` columns converted
        to the catalog types; returns its number of rows. Wrong types raise located errors."""
        if self.rows is not None:
            table = rows_to_arrow(self.path, self.rows, wanted)
            con.register("src_arrow", table)
            con.execute("CREATE OR REPLACE TEMP VIEW src AS SELECT * FROM src_arrow")
            return table.num_rows
        if self.format == "parquet":
            base = (
                f"SELECT file_row_number + 1 AS __row, * EXCLUDE (file_row_number) "
                f"FROM read_parquet({literal(self.path.as_posix())}, file_row_number = true)"
            )
        else:
            assert self.table is not None
            con.register("src_arrow", self.table)
            base = "SELECT row_number() OVER () AS __row, * FROM src_arrow"
        con.execute(f"CREATE OR REPLACE TEMP VIEW src_raw AS {base}")
        types = {name: typ for name, typ, *_ in con.execute("DESCRIBE src_raw").fetchall()}
        exprs = ["__row"]
        for col, want in wanted.items():
            exprs.append(f"{column_expr(con, self.path, col, types[col], want)} AS {qi(col)}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW src AS SELECT {', '.join(exprs)} FROM src_raw")
        row = con.execute("SELECT count(*) FROM src_raw").fetchone()
        return int(row[0]) if row else 0


def open_source(path: Path, progress: ProgressFn | None = None, hf_split: str | None = None) -> Source:
    """Open ``path`` (format from its extension) far enough to know its columns."""
    if not path.exists():
        raise TSODataError(f"{path}: file not found")
    if path.is_dir():
        return _open_hf(path, hf_split)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _open_jsonl(path, progress)
    if suffix == ".csv":
        return _open_csv(path)
    if suffix in (".parquet", ".pq"):
        return _open_parquet(path)
    raise TSODataError(
        f"{path}: unknown format {suffix or '(no extension)'}; use .jsonl, .parquet, .csv "
        "or a directory saved with datasets' save_to_disk"
    )


# -- JSONL / CSV: parsed in Python with exact line numbers ------------------------------


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise located(path, line, None,
                      f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); re-encode the file as UTF-8") from None


def _open_jsonl(path: Path, progress: ProgressFn | None) -> Source:
    data = path.read_bytes()
    text = _decode(path, data)
    if text.startswith("\ufeff"):
        text = text[1:]
    rows: list[tuple[int, dict[str, object]]] = []
    columns: dict[str, None] = {}
    total = len(data)
    done = 0
    for line_no, line in enumerate(text.split("\n"), start=1):
        done += len(line) + 1
        if progress is not None and line_no % 20000 == 0:
            progress(min(done, total), total)
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise located(path, line_no, None, f"malformed JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise located(path, line_no, None, "JSON nested too deeply to read (thousands of levels)") from None
        if not isinstance(obj, dict):
            raise located(path, line_no, None, f"expected a JSON object per line, got {json_type(obj)}")
        for key in obj:
            columns.setdefault(key, None)
        rows.append((line_no, obj))
    if progress is not None:
        progress(total, total)
    if not rows:
        raise TSODataError(f"{path}: no rows")
    return Source(path, "jsonl", list(columns), rows=rows)


def _open_csv(path: Path) -> Source:
    """Strict CSV: a header of distinct names, then records of exactly as many fields; an
    unterminated quote is an error at the line where the quoted field starts (a lenient
    reader would swallow the following rows into it)."""
    text = _decode(path, path.read_bytes())
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    while True:
        line_no = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problem = "a quoted field starting on this line is never closed" if "end of data" in str(exc) else str(exc)
            raise located(path, line_no, None, f"malformed CSV ({problem})") from None
        if record:  # a blank line holds no record
            records.append((line_no, record))
    if not records:
        raise TSODataError(f"{path}: no rows")
    header_line, header = records[0]
    _check_header(path, header_line, header)
    rows: list[tuple[int, dict[str, object]]] = []
    for line_no, record in records[1:]:
        if len(record) != len(header):
            raise located(path, line_no, None, f"malformed CSV: {len(record)} field(s), the header has {len(header)}")
        # an empty CSV cell is a missing value, not an empty string
        rows.append((line_no, {k: (v if v != "" else None) for k, v in zip(header, record)}))
    if not rows:
        raise TSODataError(f"{path}: no rows")
    return Source(path, "csv", header, rows=rows)


def _check_header(path: Path, line_no: int, header: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(header, 1):
        if not name.strip():
            raise located(path, line_no, None, f"malformed CSV header: column {i} has no name")
        if name in seen:
            raise located(path, line_no, name, f"duplicate column name (columns {seen[name]} and {i})")
        seen[name] = i


# -- Parquet / HF datasets: column-wise, types checked per column -----------------------


def _open_parquet(path: Path) -> Source:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - any Arrow failure means "not a Parquet file"
        raise TSODataError(f"{path}: not a readable Parquet file ({exc})") from None
    return Source(path, "parquet", list(schema.names))


def _open_hf(path: Path, hf_split: str | None) -> Source:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise TSODataError(f"{path}: not a dataset saved with datasets' save_to_disk ({exc})") from None
    notes = []
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        if hf_split is None and len(names) == 1:
            hf_split = names[0]
        if hf_split not in loaded:
            raise TSODataError(
                f"{path}: a DatasetDict with splits {', '.join(names)}; choose one with --hf-split"
            )
        loaded = loaded[hf_split]
        notes.append(f"split {hf_split}")
    table = loaded.with_format("arrow")[:]
    return Source(path, "hf", list(table.column_names), table=table, notes=notes)

