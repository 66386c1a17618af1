"""The model matrix: every source is a row of `models` (family, version, size);
'human' is a built-in source of kind 'human'."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date

import duckdb

from tso_data.catalog import HUMAN_SOURCE, Catalog
from tso_data.errors import TSODataError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str
    family: str | None
    version: str | None
    version_order: int | None
    size_b: float | None
    path: str | None
    endpoint: str | None
    backend: str | None
    note: str | None

    @property
    def is_human(self) -> bool:
        return self.kind == "human"


_DOTTED_RE = re.compile(r"[vV]?(\d{1,3}(?:\.\d{1,3}){1,2})")
_PART_BASE = 1000  # each part of a dotted version below 1000: 3.10 -> 3·10^6 + 10·10^3


def version_order(version: str) -> int:
    """Orderable key of a version: an integer as itself, a dotted version (up to three
    parts, each below 1000) as major·10⁶ + minor·10³ + patch, an ISO date as YYYYMMDD.

    >>> version_order("3")
    3
    >>> version_order("2024-06-01")
    20240601
    >>> version_order("v2")
    2
    >>> version_order("v1.3"), version_order("3.10"), version_order("2.5.1")
    (1003000, 3010000, 2005001)
    >>> version_order("beta")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: version 'beta': expected an integer (2, v2), a dotted version (3.1, v1.3)
    or a date (YYYY-MM-DD); for other names give --version-order
    """
    text = version.strip()
    m = re.fullmatch(r"[vV]?(\d+)", text)
    if m:
        return int(m.group(1))
    parts = dotted_parts(text)
    if parts is not None:
        return _packed(parts)
    try:
        d = date.fromisoformat(text)
    except ValueError:
        raise TSODataError(
            f"version {version!r}: expected an integer (2, v2), a dotted version (3.1, v1.3) or a date "
            "(YYYY-MM-DD); for other names give --version-order"
        ) from None
    return d.year * 10000 + d.month * 100 + d.day


def dotted_parts(version: str | None) -> tuple[int, ...] | None:
    """The numeric parts of an integer or dotted version ('v3.1' -> (3, 1)), else None.

    >>> dotted_parts("v3.1"), dotted_parts("7"), dotted_parts("2024-06-01")
    ((3, 1), (7,), None)
    """
    if version is None:
        return None
    text = version.strip()
    if re.fullmatch(r"[vV]?\d+", text):
        return (int(text.lstrip("vV")),)
    m = _DOTTED_RE.fullmatch(text)
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def _packed(parts: tuple[int, ...]) -> int:
    padded = (*parts, 0, 0)[:3]
    return (padded[0] * _PART_BASE + padded[1]) * _PART_BASE + padded[2]


def version_key(version: str | None, order: int | None) -> tuple[int, ...] | None:
    """How two versions of a family compare: the numeric parts of an integer or dotted
    version (so 3 < 3.1 < 3.10 < 4), else the stored order (a date, an explicit
    --version-order) alone; None = off the version axis.

    >>> sorted(["4", "3.10", "3", "3.1"], key=lambda v: version_key(v, version_order(v)))
    ['3', '3.1', '3.10', '4']
    >>> version_key("chat", 7), version_key("chat", None)
    ((7,), None)
    """
    if order is None:
        return None
    parts = dotted_parts(version)
    if parts is not None and (len(parts) == 1 and parts[0] == order or len(parts) > 1 and _packed(parts) == order):
        return parts
    return (order,)


def model_info(
    name: str,
    *,
    family: str,
    version: str,
    size_b: float | None,
    path: str | None = None,
    endpoint: str | None = None,
    backend: str | None = None,
    note: str | None = None,
    order: int | None = None,
    unordered_ok: bool = False,
) -> ModelInfo:
    """Validate the fields of a matrix cell (see :func:`add_model`)."""
    if not _NAME_RE.match(name):
        raise TSODataError(f"model name {name!r}: use letters, digits and . _ : / @ + -")
    if name == HUMAN_SOURCE:
        raise TSODataError("'human' is the built-in source of human answers; pick another name")
    if size_b is not None and (not math.isfinite(size_b) or size_b <= 0):
        raise TSODataError(f"model {name!r}: --size-b must be a finite number > 0 (billions of parameters), "
                           f"got {size_b!r}")
    if order is None:
        try:
            order = version_order(str(version))
        except TSODataError:
            if not unordered_ok:
                raise
            order = None
    return ModelInfo(
        name=name,
        kind="model",
        family=family,
        version=str(version),
        version_order=order,
        size_b=None if size_b is None else float(size_b),
        path=path,
        endpoint=endpoint,
        backend=backend,
        note=note,
    )


def add_model(
    catalog: Catalog,
    name: str,
    *,
    family: str,
    version: str,
    size_b: float | None,
    path: str | None = None,
    endpoint: str | None = None,
    backend: str | None = None,
    note: str | None = None,
    replace: bool = False,
    order: int | None = None,
    unordered_ok: bool = False,
) -> ModelInfo:
    """Register a matrix cell. Re-adding identical fields is a no-op; different fields
    need ``replace=True``.

    ``size_b`` None = unknown size (an API model): the model is off the size axis.
    ``order`` overrides the version's orderable key; with ``unordered_ok`` a version that
    is neither an integer nor a date ('chat', 'v1.3') is stored with ``version_order``
    NULL (off the version axis) instead of failing.
    """
    info = model_info(
        name, family=family, version=version, size_b=size_b, path=path, endpoint=endpoint,
        backend=backend, note=note, order=order, unordered_ok=unordered_ok,
    )
    existing = find_model(catalog, name)
    if existing is not None and existing == info:
        return info
    if existing is not None and not replace:
        raise TSODataError(
            f"model {name!r} already exists with different fields; pass --replace to update it"
        )
    with catalog.connect(read_only=False) as con:
        write_model(con, info)
    return info


def write_model(con: duckdb.DuckDBPyConnection, info: ModelInfo) -> None:
    """Insert or replace one model row inside an open transaction."""
    con.execute("DELETE FROM models WHERE name = ?", [info.name])
    con.execute(
        "INSERT INTO models (name, kind, family, version, version_order, size_b, path, "
        "endpoint, backend, note, added_at) VALUES (?, 'model', ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [info.name, info.family, info.version, info.version_order, info.size_b, info.path,
         info.endpoint, info.backend, info.note],
    )


def list_models(catalog: Catalog) -> list[ModelInfo]:
    rows = catalog.arrow(
        "SELECT name, kind, family, version, version_order, size_b, path, endpoint, backend, note "
        "FROM models ORDER BY kind, family, version_order, size_b, name"
    ).to_pylist()
    return [ModelInfo(**row) for row in rows]


def find_model(catalog: Catalog, name: str) -> ModelInfo | None:
    rows = catalog.arrow(
        "SELECT name, kind, family, version, version_order, size_b, path, endpoint, backend, note "
        "FROM models WHERE name = ?",
        [name],
    ).to_pylist()
    return ModelInfo(**rows[0]) if rows else None


def get_model(catalog: Catalog, name: str) -> ModelInfo:
    """The model called ``name``, or a clear error listing the known ones."""
    info = find_model(catalog, name)
    if info is None:
        known = ", ".join(m.name for m in list_models(catalog)) or "none"
        raise TSODataError(
            f"unknown model {name!r} in {catalog.root} (known: {known}); "
            f"add it with `tso-data models add {name} --family F --version V --size-b S --path P`"
        )
    return info
