"""The catalog's value types, and converting input values and columns to them.

Row by row for JSONL and CSV (:func:`check_value`: the error names the line), column by
column for Parquet and HF datasets (:func:`column_expr`: the error names the first row with
a value). See docs/design.md, 3. The catalog.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pyarrow as pa

from tso_data.errors import located
from tso_data.ingest.mapping import INT, LABEL, MESSAGES, NUMBER, TEXT, TEXT_LIST
from tso_data.ingest.sql import qi

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
INT64_LIMIT = 2**63


def json_type(value: object) -> str:
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
            raise ValueError(f"expected a list of strings; item {bad} is {json_type(value[bad - 1])}")
    elif want == MESSAGES:
        if isinstance(value, list):
            out = []
            for i, m in enumerate(value, 1):
                if not isinstance(m, dict):
                    raise ValueError(f"expected a list of {{role, content}} messages; item {i} is {json_type(m)}")
                for key in ("role", "content"):
                    if not isinstance(m.get(key), str):
                        raise ValueError(
                            f"expected a list of {{role, content}} messages; item {i} has no string '{key}'"
                        )
                out.append({"role": m["role"], "content": m["content"]})
            return out
    raise ValueError(f"expected {TYPE_WORDS[want]}, got {json_type(value)}")


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


def rows_to_arrow(path: Path, rows: list[tuple[int, dict[str, object]]], wanted: dict[str, str]) -> pa.Table:
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
            raise located(path, line_no, col,
                          "text holds a lone surrogate (an invalid \\uD800-\\uDFFF escape)") from None
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


_INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
              "UHUGEINT"}
_NUM_TYPES = _INT_TYPES | {"FLOAT", "DOUBLE", "REAL"}


def column_expr(con: duckdb.DuckDBPyConnection, path: Path, col: str, typ: str, want: str) -> str:
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
