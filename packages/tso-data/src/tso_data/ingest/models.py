"""Register many models at once from a JSONL/CSV/Parquet file (``tso-data models import``).

Columns (``--map`` works as for ingest): name (or model, model_id), family, version (or
model_version), version_order, size_b (or size), path, endpoint, backend, note. A version
that is neither an integer, a dotted version (3.1) nor a date and has no version_order is
kept off the version axis (version_order NULL); a missing size_b keeps the model off the
size axis. All rows are checked first, then written in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError, located
from tso_data.ingest.mapping import INT, LABEL, NUMBER, TEXT, Binding, Field, resolve
from tso_data.ingest.readers import open_source
from tso_data.ingest.sql import literal, qi
from tso_data.matrix import ModelInfo, find_model, model_info, write_model

MODEL_FIELDS = (
    Field("name", LABEL, ("name", "model", "model_id")),
    Field("family", LABEL, ("family",)),
    Field("version", LABEL, ("version", "model_version")),
    Field("version_order", INT, ("version_order",)),
    Field("size_b", NUMBER, ("size_b", "size")),
    Field("path", TEXT, ("path",)),
    Field("endpoint", TEXT, ("endpoint",)),
    Field("backend", LABEL, ("backend",)),
    Field("note", TEXT, ("note", "description")),
)


@dataclass
class ModelsImport:
    path: str
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unordered: list[str] = field(default_factory=list)  # off the version axis
    unsized: list[str] = field(default_factory=list)  # off the size axis


def import_models(
    catalog: Catalog,
    path: str | Path,
    *,
    mapping: dict[str, str] | None = None,
    constants: dict[str, str] | None = None,
    replace: bool = False,
) -> ModelsImport:
    path = Path(path)
    bindings, rows = _read_rows(path, mapping or {}, constants or {})
    result = ModelsImport(str(path))
    infos: list[tuple[ModelInfo, bool]] = []
    seen: dict[str, int] = {}
    for row in rows:
        line = row["__row"]
        name = row.get("name")
        info = _model_of_row(path, row, bindings, seen)
        existing = find_model(catalog, name)
        if existing is not None and existing == info:
            result.unchanged.append(name)
            continue
        if existing is not None and not replace:
            raise located(path, line, bindings["name"].label,
                          f"model {name!r} already exists with different fields; pass --replace")
        (result.replaced if existing is not None else result.added).append(name)
        infos.append((info, existing is not None))
        if info.version_order is None:
            result.unordered.append(name)
        if info.size_b is None:
            result.unsized.append(name)
    if infos:
        with catalog.connect(read_only=False) as con:
            for info, _ in infos:
                write_model(con, info)
    return result


def _read_rows(
    path: Path, mapping: dict[str, str], constants: dict[str, str]
) -> tuple[dict[str, Binding], list[dict[str, object]]]:
    """The file's rows as dicts of the model fields (``__row``: the line or row number)."""
    source = open_source(path)
    bindings = resolve(MODEL_FIELDS, source.columns, mapping, constants, kind="models", path=path)
    for required in ("name", "family"):
        if required not in bindings:
            raise located(path, 1, required, f"missing (map it with --map {required}=COLUMN)")
    mem = duckdb.connect()
    try:
        wanted = {b.columns[0]: b.field.type for b in bindings.values() if b.columns}
        source.register(mem, wanted)
        select = ", ".join(
            (f"{qi(b.columns[0])} AS {name}" if b.columns else f"{literal(b.constant)} AS {name}")
            for name, b in bindings.items()
        )
        return bindings, mem.sql(f"SELECT __row, {select} FROM src ORDER BY __row").to_arrow_table().to_pylist()
    finally:
        mem.close()


def _model_of_row(path: Path, row: dict[str, object], bindings: dict[str, Binding], seen: dict[str, int]) -> ModelInfo:
    """The model a row describes, checked (``seen``: the names met so far, with their line)."""
    line = row["__row"]
    name = row.get("name")
    if not name:
        raise located(path, line, bindings["name"].label, "missing value")
    if name in seen:
        raise located(path, line, bindings["name"].label, f"model {name!r} already given on line/row {seen[name]}")
    seen[name] = line
    if not row.get("family"):
        raise located(path, line, bindings["family"].label, "missing value")
    version = row.get("version")
    order = row.get("version_order")
    if version is None and order is None:
        raise located(path, line, "version", "missing: give a version or a version_order column")
    try:
        return model_info(
            name, family=row["family"], version=str(version if version is not None else order),
            size_b=row.get("size_b"), path=row.get("path"), endpoint=row.get("endpoint"),
            backend=row.get("backend"), note=row.get("note") or None, order=order, unordered_ok=True,
        )
    except TSODataError as exc:
        raise located(path, line, None, str(exc)) from None
