"""Rubrics as data: a TOML file per rubric, validated on load.

A rubric names a dimension, its score scale and the judge prompt (system + user template).
The judge's reply must end with ``Score: <number>`` (see :mod:`tso_data.judge.parsing`).

Template slots (``{name}``; write ``{{`` / ``}}`` for literal braces):

``{question}``  the prompt (for multi-turn prompts: the conversation up to the last user turn)
``{answer}``    the answer being judged (required in the user template)
``{reference_block}``  ``[prompt] reference_block`` filled with ``{reference}``, or empty
                when the target has no reference answer
``{scale_min}``, ``{scale_max}``, ``{dimension}``, ``{description}``

Shipped rubrics live beside this module (``rubrics/*.toml``); a user's own rubrics are read
from ``<catalog>/rubrics/`` and any ``--rubrics-dir``, and override shipped ones by name.
"""

from __future__ import annotations

import math
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tso_data.errors import TSODataError, located

SHIPPED_DIR = Path(__file__).with_name("rubrics")
USER_SLOTS = frozenset({"question", "answer", "reference_block", "scale_min", "scale_max", "dimension", "description"})
REFERENCE_SLOTS = frozenset({"reference"})


@dataclass(frozen=True)
class Rubric:
    name: str
    version: str
    description: str
    scale_min: float
    scale_max: float
    system: str
    user: str
    reference_block: str
    source: str  # the file it came from

    def render(self, question: str, answer: str, reference: str | None) -> list[dict[str, str]]:
        """The judge conversation (system + user) for one answer.

        >>> r = load_rubric(SHIPPED_DIR / "overall.toml")
        >>> msgs = r.render("What is 2+2?", "4", None)
        >>> [m["role"] for m in msgs]
        ['system', 'user']
        >>> "What is 2+2?" in msgs[1]["content"] and "Reference answer" not in msgs[1]["content"]
        True
        >>> "Reference answer" in r.render("What is 2+2?", "4", "Four.")[1]["content"]
        True
        """
        common = {
            "scale_min": _fmt(self.scale_min),
            "scale_max": _fmt(self.scale_max),
            "dimension": self.name,
            "description": self.description,
        }
        block = ""
        if reference is not None and self.reference_block:
            block = self.reference_block.format_map({**common, "reference": reference})
        values = {**common, "question": question, "answer": answer, "reference_block": block}
        return [
            {"role": "system", "content": self.system.format_map(values)},
            {"role": "user", "content": self.user.format_map(values)},
        ]


def _fmt(x: float) -> str:
    return f"{x:g}"


def _slots(template: str, where: str) -> set[str]:
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as exc:
        raise TSODataError(f"{where}: bad template ({exc}); write {{{{ and }}}} for literal braces") from None


def rubric_from_dict(data: dict[str, object], source: str) -> Rubric:
    """Validate a parsed rubric file; every problem names the file and the field."""

    def need(table: dict[str, object], key: str, prefix: str = "") -> object:
        if key not in table:
            raise located(source, None, prefix + key, "missing")
        return table[key]

    name = need(data, "name")
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        raise located(source, None, "name", "expected a non-empty name without spaces")
    version = str(need(data, "version"))
    description = str(data.get("description", ""))
    scale = data.get("scale")
    if not isinstance(scale, dict):
        raise located(source, None, "scale", "missing: add a [scale] table with min and max, e.g. min = 1, max = 10")
    lo, hi = need(scale, "min", "scale."), need(scale, "max", "scale.")
    for key, value in (("scale.min", lo), ("scale.max", hi)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise located(source, None, key, f"expected a finite number, got {value!r}")
    if not float(lo) < float(hi):
        raise located(source, None, "scale", f"min ({lo}) must be below max ({hi})")
    prompt = data.get("prompt")
    if not isinstance(prompt, dict):
        raise located(source, None, "prompt", "missing: add a [prompt] table with system and user templates")
    system = need(prompt, "system", "prompt.")
    user = need(prompt, "user", "prompt.")
    reference_block = prompt.get("reference_block", "")
    for key, value in (("prompt.system", system), ("prompt.user", user), ("prompt.reference_block", reference_block)):
        if not isinstance(value, str):
            raise located(source, None, key, "expected a string")
    for key, template, allowed in (
        ("prompt.system", system, USER_SLOTS),
        ("prompt.user", user, USER_SLOTS),
        ("prompt.reference_block", reference_block,
         USER_SLOTS - {"reference_block", "question", "answer"} | REFERENCE_SLOTS),
    ):
        unknown = _slots(template, f"{source}: field '{key}'") - allowed
        if unknown:
            raise located(
                source, None, key,
                f"unknown slot(s) {', '.join('{' + u + '}' for u in sorted(unknown))}; "
                f"allowed: {', '.join('{' + a + '}' for a in sorted(allowed))}",
            )
    if "answer" not in _slots(user, source):
        raise located(source, None, "prompt.user",
                      "template has no {answer} slot: the judge would never see the answer")
    if "question" not in _slots(user, source):
        raise located(source, None, "prompt.user", "template has no {question} slot")
    return Rubric(
        name=name, version=version, description=description, scale_min=float(lo), scale_max=float(hi),
        system=system, user=user, reference_block=reference_block, source=source,
    )


def load_rubric(path: Path) -> Rubric:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise located(path, None, None, "rubric file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise located(path, None, None, f"not valid TOML: {exc}") from None
    rubric = rubric_from_dict(data, str(path))
    return rubric


def rubric_dirs(catalog_root: Path | None = None, extra: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    """Search order, later overrides earlier: shipped, <catalog>/rubrics, each extra dir."""
    dirs = [SHIPPED_DIR]
    if catalog_root is not None:
        dirs.append(catalog_root / "rubrics")
    dirs.extend(Path(d) for d in extra)
    return dirs


def available_rubrics(dirs: list[Path]) -> dict[str, Rubric]:
    """All rubrics by name; a later directory's rubric replaces an earlier one's."""
    found: dict[str, Rubric] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            rubric = load_rubric(path)
            found[rubric.name] = rubric
    return found


def resolve_rubrics(names: list[str] | tuple[str, ...], dirs: list[Path]) -> list[Rubric]:
    """The named rubrics (default: ``overall``); a clear error lists the known names."""
    known = available_rubrics(dirs)
    wanted = list(names) or ["overall"]
    missing = [n for n in wanted if n not in known]
    if missing:
        raise TSODataError(
            f"unknown rubric(s) {', '.join(missing)}; available: {', '.join(sorted(known))} "
            f"(add your own as TOML in {dirs[-1]})"
        )
    return [known[n] for n in dict.fromkeys(wanted)]
