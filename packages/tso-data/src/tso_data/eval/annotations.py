"""Reading pairwise annotation files others wrote, into plain records (no catalog access):

* **AlpacaEval** ``annotations.json``: a JSON array of records with ``instruction``,
  ``output_1``, ``generator_1`` (the baseline), ``output_2``, ``generator_2``,
  ``preference`` (1 = output_1 better, 2 = output_2 better, 1.5 or the legacy 0 = a draw,
  any value between from a weighted annotator, null = the annotator failed), and
  ``annotator`` (the judge's name); ``raw_completion`` and ``dataset`` when present.
* **FastChat** pairwise judgments (``model_judgment/*_pair.jsonl``): one JSON object per
  line with ``question_id``, ``model_1``, ``model_2``, ``g1_winner`` (game 1: model_1 shown
  as A), ``g2_winner`` (game 2: model_2 shown as A; already named as model_1 / model_2 /
  tie / error), ``judge`` ([name, prompt name]), the judge texts ``g1_judgment`` /
  ``g2_judgment`` and the judge prompts ``g1_user_prompt`` / ``g2_user_prompt``. Each line
  gives two verdicts, one per order.

Every problem is a :class:`~tso_data.errors.TSODataError` naming the file, the record (the
line for JSONL, the position in the array for JSON) and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tso_data.errors import TSODataError, located
from tso_data.eval.pairwise import normalise_preference

FASTCHAT_WINNERS = {"model_1": 1.0, "model_2": 2.0, "tie": 1.5}


@dataclass(frozen=True)
class Annotation:
    """One verdict to store: answer 1 (the baseline) against answer 2."""

    record: int  # 1-based, for error messages
    source_1: str
    source_2: str
    preference: float | None  # None: the annotator gave no valid verdict (stored as unparsed)
    judge: str
    rubric: str
    shown_first: int | None = None
    raw_text: str | None = None
    instruction: str | None = None  # AlpacaEval: the prompt's text, and the two outputs
    output_1: str | None = None
    output_2: str | None = None
    dataset: str | None = None
    question_id: str | None = None  # FastChat: the prompt's external id, the judge prompt shown
    user_prompt: str | None = None
    turn: int = 1


def detect_format(path: Path) -> str:
    """``'alpaca_eval'`` for a JSON array, ``'fastchat'`` for JSON lines."""
    with open(path, encoding="utf-8") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith("["):
        return "alpaca_eval"
    if head.startswith("{"):
        return "fastchat"
    raise located(path, None, None, "expected AlpacaEval annotations (a JSON array) or FastChat pairwise "
                                    "judgments (JSON lines)")


def read_annotations(path: Path, overrides: dict[str, str]) -> tuple[str, list[Annotation]]:
    """(format, records) of one file; ``overrides`` may set ``judge`` and ``rubric``."""
    if not path.is_file():
        raise located(path, None, None, "file not found")
    kind = detect_format(path)
    reader = read_alpaca_eval if kind == "alpaca_eval" else read_fastchat
    return kind, reader(path, overrides)


def read_alpaca_eval(path: Path, overrides: dict[str, str]) -> list[Annotation]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise located(path, None, None, f"not valid JSON: {exc}") from None
    if not isinstance(records, list):
        raise located(path, None, None, "expected a JSON array of annotation records")
    out = []
    for index, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise located(path, index, None, "expected an object")
        try:
            preference = normalise_preference(record.get("preference"))
        except ValueError as exc:
            raise located(path, index, "preference", str(exc)) from None
        out.append(Annotation(
            record=index,
            source_1=_text(path, index, record, "generator_1"),
            source_2=_text(path, index, record, "generator_2"),
            preference=preference,
            judge=overrides.get("judge") or _text(path, index, record, "annotator", "pass --set judge=NAME"),
            rubric=overrides.get("rubric", "pairwise"),
            raw_text=_raw(record.get("raw_completion")),
            instruction=_text(path, index, record, "instruction"),
            output_1=_text(path, index, record, "output_1", allow_empty=True),
            output_2=_text(path, index, record, "output_2", allow_empty=True),
            dataset=record.get("dataset") if isinstance(record.get("dataset"), str) else None,
        ))
    return out


def read_fastchat(path: Path, overrides: dict[str, str]) -> list[Annotation]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise located(path, line_no, None, f"not valid JSON: {exc}") from None
            if not isinstance(record, dict):
                raise located(path, line_no, None, "expected an object")
            out.extend(_fastchat_games(path, line_no, record, overrides))
    return out


def _fastchat_games(path: Path, line_no: int, record: dict[str, Any], overrides: dict[str, str]) -> list[Annotation]:
    judge_field = record.get("judge")
    named = judge_field if isinstance(judge_field, list) and len(judge_field) == 2 else None
    judge = overrides.get("judge") or (str(named[0]) if named else None)
    rubric = overrides.get("rubric") or (str(named[1]) if named else "pairwise")
    if not judge:
        raise located(path, line_no, "judge", "expected [judge model, prompt name]; or pass --set judge=NAME")
    if "question_id" not in record:
        raise located(path, line_no, "question_id", "missing")
    games = []
    for game, shown_first in (("g1", 1), ("g2", 2)):
        winner = record.get(f"{game}_winner")
        if winner == "error":
            preference = None
        elif winner in FASTCHAT_WINNERS:
            preference = FASTCHAT_WINNERS[winner]
        else:
            raise located(path, line_no, f"{game}_winner",
                          f"{winner!r} is not a verdict (model_1, model_2, tie, or error)")
        games.append(Annotation(
            record=line_no, source_1=_text(path, line_no, record, "model_1"),
            source_2=_text(path, line_no, record, "model_2"), preference=preference, judge=judge, rubric=rubric,
            shown_first=shown_first, raw_text=_raw(record.get(f"{game}_judgment")),
            question_id=str(record["question_id"]), user_prompt=_raw(record.get(f"{game}_user_prompt")),
            turn=int(record.get("turn", 1) or 1),
        ))
    return games


def _text(path: Path, record_no: int, record: dict[str, Any], field: str, hint: str = "",
          allow_empty: bool = False) -> str:
    value = record.get(field)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        kind = "string" if allow_empty else "non-empty string"
        what = "missing" if value is None else f"expected a {kind}, got {value!r:.40}"
        raise located(path, record_no, field, what + (f"; {hint}" if hint else ""))
    return value


def _raw(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def check_overrides(constants: dict[str, str]) -> dict[str, str]:
    """``--set`` keys a verdicts ingest understands."""
    allowed = ("judge", "judge_version", "rubric", "split", "source")
    for key in constants:
        if key not in allowed:
            raise TSODataError(f"--set {key}=...: not a field of verdicts (use {', '.join(allowed)})")
    return dict(constants)
