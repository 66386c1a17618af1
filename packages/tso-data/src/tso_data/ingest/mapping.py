"""Which file column feeds which catalog field.

Every ingest kind has *logical fields* (``prompt``, ``turns``, ``model``, ``score`` ...).
Each is taken from the first of its default column names that the file has, unless the
user maps it explicitly:

``--map FIELD=COLUMN``
    take FIELD from COLUMN.
``--map FIELD=COL1,COL2``
    a *list* field (``turns``) collects the columns in order, one item per column
    (MT-Bench: ``--map turns=turn_1,turn_2``); a *scalar* field splits each row into one
    record per column, paired by position with the other split fields (a pairwise review:
    ``--map model=model_1,model_2 --map score=score_1,score_2``).
``--set FIELD=VALUE``
    the same constant for every row (``--set source=mt_bench``, ``--set judge=gpt-4``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tso_data.errors import TSODataError

# Value types a field accepts (see readers.check_value for the JSON rules).
TEXT = "text"  # a string
LABEL = "label"  # a string, or an integer stored as its decimal text (ids, names)
INT = "int"
NUMBER = "number"
MESSAGES = "messages"  # a list of {role, content}
TEXT_LIST = "text_list"  # a list of strings

_FIELD_RE = re.compile(r"^[a-z_]+$")


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    defaults: tuple[str, ...] = ()  # column names tried in order when not mapped
    help: str = ""
    is_list: bool = False  # several columns are collected into one list
    constant_ok: bool = True  # may be given with --set


@dataclass
class Binding:
    """Where one logical field comes from: columns of the file, or a constant."""

    field: Field
    columns: list[str] = field(default_factory=list)
    constant: str | None = None

    @property
    def label(self) -> str:
        """The name used in error messages: the file's column when there is one."""
        return ",".join(self.columns) if self.columns else self.field.name


def parse_pairs(specs: Iterable[str], option: str) -> dict[str, str]:
    """Parse ``FIELD=VALUE`` options into a dict.

    >>> parse_pairs(["turns=turn_1,turn_2", "model = m"], "--map")
    {'turns': 'turn_1,turn_2', 'model': 'm'}
    >>> parse_pairs(["oops"], "--map")
    Traceback (most recent call last):
    ...
    tso_data.errors.TSODataError: --map 'oops': expected FIELD=VALUE
    """
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or not _FIELD_RE.match(name):
            raise TSODataError(f"{option} {spec!r}: expected FIELD=VALUE")
        out[name] = value.strip()
    return out


def resolve(
    fields: Sequence[Field],
    columns: Sequence[str],
    mapping: dict[str, str],
    constants: dict[str, str],
    *,
    kind: str,
    path: object,
) -> dict[str, Binding]:
    """Bind each logical field to columns of the file (or a constant).

    Explicit ``mapping``/``constants`` win over default column names; a mapped column the
    file lacks, or an unknown field name, is an error.

    >>> fs = [Field("turns", TEXT_LIST, ("turns",), is_list=True), Field("model", LABEL, ("model",))]
    >>> b = resolve(fs, ["turn_1", "turn_2", "model"], {"turns": "turn_1,turn_2"}, {}, kind="responses", path="r.jsonl")
    >>> b["turns"].columns, b["model"].columns
    (['turn_1', 'turn_2'], ['model'])
    """
    by_name = {f.name: f for f in fields}
    for name in list(mapping) + list(constants):
        if name not in by_name:
            known = ", ".join(sorted(by_name))
            raise TSODataError(f"{path}: '{name}' is not a field of {kind} (fields: {known})")
    present = set(columns)
    bindings: dict[str, Binding] = {}
    for f in fields:
        if f.name in constants:
            if not f.constant_ok:
                raise TSODataError(f"{path}: field '{f.name}' cannot be a constant (--set); map a column")
            bindings[f.name] = Binding(f, constant=constants[f.name])
            continue
        if f.name in mapping:
            cols = [c.strip() for c in mapping[f.name].split(",") if c.strip()]
            missing = [c for c in cols if c not in present]
            if not cols or missing:
                raise TSODataError(
                    f"{path}: --map {f.name}={mapping[f.name]}: no column "
                    f"{', '.join(repr(c) for c in missing) or repr('')} in the file "
                    f"(columns: {', '.join(columns)})"
                )
            bindings[f.name] = Binding(f, columns=cols)
            continue
        for candidate in f.defaults:
            if candidate in present:
                bindings[f.name] = Binding(f, columns=[candidate])
                break
        else:
            if f.is_list:
                numbered = numbered_columns(columns, f.name.rstrip("s"))
                if numbered:
                    bindings[f.name] = Binding(f, columns=numbered)
    return bindings


def numbered_columns(columns: Sequence[str], stem: str) -> list[str]:
    """Columns ``stem_1, stem_2, ...`` in numeric order (MT-Bench's ``turn_1``, ``turn_2``).

    >>> numbered_columns(["turn_2", "model", "turn_1"], "turn")
    ['turn_1', 'turn_2']
    """
    found = []
    for c in columns:
        m = re.fullmatch(rf"{re.escape(stem)}_?(\d+)", c)
        if m:
            found.append((int(m.group(1)), c))
    return [c for _, c in sorted(found)]
