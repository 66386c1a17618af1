"""Pairwise verdicts from judge text: pure functions, no I/O, no model calls.

The judge sees two answers, shown as "Assistant A" and "Assistant B", and ends its reply
with ``[[A]]`` (A is better), ``[[B]]`` (B is better) or ``[[C]]`` (a tie). The rules are
those of :mod:`tso_data.judge.parsing`:

* the **last** verdict in the text wins (judges echo the instructions' format first);
* a verdict outside the scale (``[[D]]``, ``[[7]]``) makes the text *unparsed*; it never
  falls back to an earlier verdict;
* failure is a status with a reason, never a number.

A verdict is then mapped to AlpacaEval's *preference* between the stored answers 1 and 2
(answer 1 = the baseline): 1 = answer 1 better, 2 = answer 2 better, 1.5 = a tie. Which
stored answer was shown as "A" (``shown_first``) decides the mapping, so a judge asked in
both orders gets both of its verdicts counted the right way round.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

Winner = Literal["A", "B", "tie"]
VerdictStatus = Literal["ok", "unparsed"]

# "[[A]]", "[[ b ]]", "[[tie]]", and the plain "Verdict: A" / "Final verdict: tie" forms.
_BRACKETED = re.compile(r"\[\[\s*([A-Za-z0-9.]+)\s*\]\]")
_LABELLED = re.compile(r"(?i)\bverdict\s*\**\s*[:=]\s*\**\s*(?:assistant\s+)?([A-Za-z0-9]+)\b")
_WINNERS: dict[str, Winner] = {"a": "A", "b": "B", "c": "tie", "tie": "tie"}


class VerdictParse(NamedTuple):
    """``winner`` is None unless ``status == 'ok'``; ``reason`` says why."""

    winner: Winner | None
    status: VerdictStatus
    reason: str


def parse_verdict(text: str | None) -> VerdictParse:
    """The judge's verdict: the last ``[[X]]`` (or ``Verdict: X``) claim, checked.

    >>> parse_verdict("B is more accurate. [[B]]")
    VerdictParse(winner='B', status='ok', reason="'[[B]]'")
    >>> parse_verdict('Reply "[[A]]" if A is better, "[[B]]" if B is better.\\n...\\nFinal verdict: [[A]]').winner
    'A'
    >>> parse_verdict("Equally good. [[C]]").winner
    'tie'
    >>> parse_verdict("Verdict: tie").winner
    'tie'
    >>> parse_verdict("**Verdict:** Assistant B").winner
    'B'

    Outside the scale, or no verdict at all: unparsed, with the reason.

    >>> parse_verdict("[[A]] at first, but on reflection [[D]]")
    VerdictParse(winner=None, status='unparsed', reason="verdict 'D' is not one of A, B, C (tie)")
    >>> parse_verdict("Both answers are fine.")
    VerdictParse(winner=None, status='unparsed', reason='no verdict found')
    >>> parse_verdict(None).reason
    'no text'
    """
    if not text:
        return VerdictParse(None, "unparsed", "no text")
    last: re.Match[str] | None = None
    for pattern in (_BRACKETED, _LABELLED):
        for match in pattern.finditer(text):
            if last is None or match.start() > last.start():
                last = match
    if last is None:
        return VerdictParse(None, "unparsed", "no verdict found")
    claim = last.group(1)
    winner = _WINNERS.get(claim.lower())
    if winner is None:
        return VerdictParse(None, "unparsed", f"verdict {claim!r} is not one of A, B, C (tie)")
    return VerdictParse(winner, "ok", repr(last.group(0).strip()))


def preference_of(winner: Winner, shown_first: int) -> float:
    """AlpacaEval's preference between stored answers 1 and 2 for a verdict given with
    answer ``shown_first`` shown as "A".

    >>> preference_of("A", shown_first=1), preference_of("B", shown_first=1)
    (1.0, 2.0)
    >>> preference_of("A", shown_first=2), preference_of("B", shown_first=2)
    (2.0, 1.0)
    >>> preference_of("tie", shown_first=2)
    1.5
    """
    if shown_first not in (1, 2):
        raise ValueError(f"shown_first must be 1 or 2, got {shown_first!r}")
    if winner == "tie":
        return 1.5
    first_won = winner == "A"
    answer_won = 1 if first_won else 2
    if shown_first == 2:
        answer_won = 3 - answer_won
    return float(answer_won)
