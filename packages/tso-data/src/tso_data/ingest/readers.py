"""Read an input file into DuckDB as a relation ``src`` with a ``__row`` column.

Formats (chosen by extension; a directory is a saved HF ``datasets`` dataset):

- ``.jsonl`` / ``.json`` (one object per line) and ``.csv``: parsed in Python, so a
  malformed line, non-UTF-8 bytes or a value of the wrong type is reported with its line.
  ``__row`` is the 1-based line number.
- ``.parquet`` and HF datasets directories: read by DuckDB / Arrow column-wise, no
  per-row Python; a column of the wrong type is reported with the first row that has a
  value. ``__row`` is the 1-based row number.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from tso_data.errors import TSODataError, located
from tso_data.ingest.mapping import INT, LABEL, MESSAGES, NUMBER, TEXT, TEXT_LIST

ARROW_TYPES: dict[str, pa.DataType] = {
    TEXT: pa.string(),
    LABEL: pa.string(),
    INT: pa.int64(),
    NUMBER: pa.float64(),
    MESSAGES: pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
    TEXT_LIST: pa.list_(pa.string()),
}
SQL_TYPES = {
    TEXT: "VARCHAR",
    LABEL: "VARCHAR",
    INT: "BIGINT",
    NUMBER: "DOUBLE",
    MESSAGES: "STRUCT(role VARCHAR, content VARCHAR)[]",
    TEXT_LIST: "VARCHAR[]",
}
TYPE_WORDS = {
    TEXT: "a string",
    LABEL: "a string or an integer",
    INT: "an integer",
    NUMBER: "a number",
    MESSAGES: "a list of {role, content} messages",
    TEXT_LIST: "a string or a list of strings",
}

ProgressFn = Callable[[int, int], None]  # (done, total) in bytes
INT64_LIMIT = 2**63


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
            table = _rows_to_arrow(self.path, self.rows, wanted)
            con.register("src_arrow", table)
            con.execute("CREATE OR REPLACE TEMP VIEW src AS SELECT * FROM src_arrow")
            return table.num_rows
        if self.format == "parquet":
            base = (
                f"SELECT file_row_number + 1 AS __row, * EXCLUDE (file_row_number) "
                f"FROM read_parquet({_sql_str(self.path.as_posix())}, file_row_number = true)"
            )
        else:
            assert self.table is not None
            con.register("src_arrow", self.table)
            base = "SELECT row_number() OVER () AS __row, * FROM src_arrow"
        con.execute(f"CREATE OR REPLACE TEMP VIEW src_raw AS {base}")
        types = {name: typ for name, typ, *_ in con.execute("DESCRIBE src_raw").fetchall()}
        exprs = ["__row"]
        for col, want in wanted.items():
            exprs.append(f"{_column_expr(con, self.path, col, types[col], want)} AS {qi(col)}")
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
        raise located(path, line, None, f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); re-encode the file as UTF-8") from None


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
            raise located(path, line_no, None, f"expected a JSON object per line, got {_json_type(obj)}")
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


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def check_value(value: object, want: str, from_csv: bool = False) -> object:
    """Convert one JSON (or CSV) value to the catalog type ``want``; ValueError if it can't.

    >>> check_value(81, "label")
    '81'
    >>> check_value("hi", "text_list")
    ['hi']
    >>> check_value("7", "number", from_csv=True)
    7.0
    >>> check_value([{"role": "user"}], "messages")
    Traceback (most recent call last):
    ...
    ValueError: expected a list of {role, content} messages; item 1 has no string 'content'
    """
    if value is None:
        return None
    if from_csv and isinstance(value, str) and want in (INT, NUMBER, MESSAGES, TEXT_LIST):
        value = _parse_csv_cell(value, want)
    if want == TEXT:
        if isinstance(value, str):
            return value
    elif want == LABEL:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    elif want == INT:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT64_LIMIT <= value < INT64_LIMIT:
                raise ValueError(f"integer {value} out of range (at most 2^63 - 1 in magnitude)")
            return value
    elif want == NUMBER:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {value}")
            return float(value)
    elif want == TEXT_LIST:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        if isinstance(value, list):
            bad = next(i for i, v in enumerate(value, 1) if not isinstance(v, str))
            raise ValueError(f"expected a list of strings; item {bad} is {_json_type(value[bad - 1])}")
    elif want == MESSAGES:
        if isinstance(value, list):
            out = []
            for i, m in enumerate(value, 1):
                if not isinstance(m, dict):
                    raise ValueError(f"expected a list of {{role, content}} messages; item {i} is {_json_type(m)}")
                for key in ("role", "content"):
                    if not isinstance(m.get(key), str):
                        raise ValueError(
                            f"expected a list of {{role, content}} messages; item {i} has no string '{key}'"
                        )
                out.append({"role": m["role"], "content": m["content"]})
            return out
    raise ValueError(f"expected {TYPE_WORDS[want]}, got {_json_type(value)}")


def _parse_csv_cell(value: str, want: str) -> object:
    if want in (MESSAGES, TEXT_LIST):
        if want == TEXT_LIST and not value.lstrip().startswith("["):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"expected {TYPE_WORDS[want]} as JSON text") from None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected {TYPE_WORDS[want]}, got {value!r}") from None
    if want == INT and not number.is_integer():
        raise ValueError(f"expected an integer, got {value!r}")
    return int(number) if want == INT else number


def _rows_to_arrow(path: Path, rows: list[tuple[int, dict[str, object]]], wanted: dict[str, str]) -> pa.Table:
    from_csv = path.suffix.lower() == ".csv"
    arrays: dict[str, pa.Array] = {"__row": pa.array([n for n, _ in rows], pa.int64())}
    for col, want in wanted.items():
        values = []
        for line_no, obj in rows:
            try:
                values.append(check_value(obj.get(col), want, from_csv))
            except ValueError as exc:
                raise located(path, line_no, col, str(exc)) from None
        try:
            arrays[col] = pa.array(values, ARROW_TYPES[want])
        except UnicodeEncodeError:  # JSON's "\ud800" escapes decode to text UTF-8 cannot hold
            line_no = next(n for (n, _), v in zip(rows, values) if _has_lone_surrogate(v))
            raise located(path, line_no, col, "text holds a lone surrogate (an invalid \\uD800-\\uDFFF escape)") from None
    return pa.table(arrays)


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(v) for v in value.values())
    return False


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


_INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
_NUM_TYPES = _INT_TYPES | {"FLOAT", "DOUBLE", "REAL"}


def _column_expr(con: duckdb.DuckDBPyConnection, path: Path, col: str, typ: str, want: str) -> str:
    c = qi(col)
    base = typ.split("(")[0].upper()
    if typ.upper() == '"NULL"' or base == "NULL":
        return f"CAST(NULL AS {SQL_TYPES[want]})"
    ok = False
    expr = c
    if want == TEXT:
        ok = base == "VARCHAR"
    elif want == LABEL:
        ok = base == "VARCHAR" or base in _INT_TYPES
        expr = f"CAST({c} AS VARCHAR)"
    elif want == INT:
        ok = base in _INT_TYPES
        expr = f"CAST({c} AS BIGINT)"
    elif want == NUMBER:
        ok = base in _NUM_TYPES or base == "DECIMAL"
        expr = f"CAST({c} AS DOUBLE)"
    elif want == TEXT_LIST:
        if typ.upper() == "VARCHAR":
            ok, expr = True, f"CASE WHEN {c} IS NULL THEN NULL ELSE [{c}] END"
        else:
            ok = typ.upper() == "VARCHAR[]"
    elif want == MESSAGES:
        t = typ.upper().replace('"', "")
        ok = t.startswith("STRUCT(") and t.endswith(")[]") and "ROLE VARCHAR" in t and "CONTENT VARCHAR" in t
        expr = f"list_transform({c}, lambda m: {{'role': m.role, 'content': m.content}})"
    if ok:
        return expr
    first = con.execute(f"SELECT min(__row) FROM src_raw WHERE {c} IS NOT NULL").fetchone()
    raise located(path, first[0] if first else None, col, f"expected {TYPE_WORDS[want]}, got column type {typ}")


def qi(name: str) -> str:
    """Quote an SQL identifier.

    >>> print(qi('a"b'))
    "a""b"
    """
    return '"' + name.replace('"', '""') + '"'


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
