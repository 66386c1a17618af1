"""Score extraction from judge text: pure functions, no I/O, no model calls.

Rules (the lessons of FastChat, alpaca_eval and friends):

* The **last** score claim wins: judges often echo the example score from the prompt
  before giving their own, and end with the verdict.
* The claim is range-checked against the rubric's scale; a claim outside the scale makes
  the text *unparsed*, it never falls back to an earlier claim.
* Failure is a status (``'unparsed'``) with a reason, **never a sentinel number**.

Recognised single-score forms (case-insensitive)::

    Score: 8.5        Score: **8**      **Score:** 8      Rating: 7     Rating: [[7]]
    [[8]]             8/10              8 out of 10       a score of 9  Score (1-10): 6

Pairwise form (FastChat eval v0 GPT-4 reviews): two scores on the first line, ``9 8``;
otherwise the last ``(a, b)`` tuple, otherwise ``Assistant 1: a`` / ``Assistant 2: b``.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

ParseStatus = Literal["ok", "unparsed"]

_NUM = r"-?\d+(?:\.\d+)?"
_UNSIGNED = r"\d+(?:\.\d+)?"

# Matching runs on a lower-cased copy of the text, anchored at candidate positions found
# with str.rfind from the end (the last claim is what we want), rather than scanning an
# alternation over every character; benchmarks/bench_judge.py holds the parser's speed.
_KEYWORD = re.compile(
    # "score: 8", "**rating**: [[7]]", "score of 9", "score (1-10): 6", "score: 8/10"
    r"(?<![a-z0-9_])(?:score|rating)(?![a-z0-9_])[*_ \t]*(?:\([^()\n]{0,20}\)[*_ \t]*)?"
    r"(?::|=|is(?![a-z])|of(?![a-z]))[*_ \t\[(]*"
    rf"(?P<value>{_NUM})(?![\d.]\d)"
    rf"(?P<range>[ \t]*(?:-|–|to |or )[ \t]*{_UNSIGNED})?"
    rf"(?:[ \t]*(?:/|out of)[ \t]*(?P<den>{_UNSIGNED}))?"
)
_BRACKETS = re.compile(rf"\[\[[ \t]*(?P<value>{_NUM})[ \t]*\]\]")
# "8/10", "8 out of 10": a claim only when the denominator is the scale's maximum.
_FRACTION = re.compile(
    rf"(?<![\d./])(?P<value>{_UNSIGNED})[ \t]*(?:/|out of)[ \t]*(?P<den>{_UNSIGNED})(?![\d/])"
)
_NUMBER_TAIL = re.compile(rf"{_UNSIGNED}[ \t]*$")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_PAIR_FIRST_LINE = re.compile(
    rf"^[ \t*\[(]*(?P<a>{_NUM})[ \t]*(?:,[ \t]*|[ \t]+)(?P<b>{_NUM})[ \t*\])]*\.?[ \t]*$"
)
_PAIR_TUPLE = re.compile(rf"\([ \t]*(?P<a>{_NUM})[ \t]*,[ \t]*(?P<b>{_NUM})[ \t]*\)")
_PAIR_LABELLED = re.compile(
    rf"Assistant[ \t]*1[ \t]*:[ \t*]*(?P<a>{_NUM})\b[^\n]*\n(?:[ \t]*\n)*[ \t*-]*"
    rf"Assistant[ \t]*2[ \t]*:[ \t*]*(?P<b>{_NUM})\b",
    re.IGNORECASE,
)


class ScoreParse(NamedTuple):
    """One parse: ``score`` is None unless ``status == 'ok'``; ``reason`` says why.
    (A NamedTuple: immutable, and much cheaper to build than a frozen dataclass.)"""

    score: float | None
    status: ParseStatus
    reason: str


class PairParse(NamedTuple):
    """A pairwise parse: ``scores`` (first, second) is None unless ``status == 'ok'``."""

    scores: tuple[float, float] | None
    status: ParseStatus
    reason: str


def _fmt(x: float) -> str:
    return f"{x:g}"


def _out_of_scale(value: float, lo: float, hi: float) -> str | None:
    if lo <= value <= hi:
        return None
    return f"score {_fmt(value)} outside the scale {_fmt(lo)}-{_fmt(hi)}"


def parse_score(text: str | None, scale_min: float, scale_max: float) -> ScoreParse:
    """Extract the judge's score from ``text``: the last claim, range-checked.

    >>> parse_score("Clear and correct. Score: 8.5", 1, 10)
    ScoreParse(score=8.5, status='ok', reason="'Score: 8.5'")
    >>> parse_score("**Score:** **8**", 1, 10).score
    8.0
    >>> parse_score("Rating: [[7]]", 1, 10).score
    7.0
    >>> parse_score("My verdict: [[3]]", 1, 5).score
    3.0
    >>> parse_score("Good overall, 8/10.", 1, 10).score
    8.0
    >>> parse_score("I'd give it a score of 9 out of 10", 1, 10).score
    9.0

    The example from the prompt is echoed first; the last claim wins:

    >>> parse_score("Format: Score: 5\\n...fluent and right.\\nScore: 9", 1, 10).score
    9.0

    Fractions that are not on the scale (a recipe's 1/2 cup) are not score claims:

    >>> parse_score("Score: 6. Use 1/2 cup of sugar.", 1, 10).score
    6.0

    Failures are statuses with reasons, never numbers:

    >>> parse_score("Score: 11", 1, 10)
    ScoreParse(score=None, status='unparsed', reason='score 11 outside the scale 1-10')
    >>> parse_score("A fine answer.", 1, 10)
    ScoreParse(score=None, status='unparsed', reason='no score found')
    >>> parse_score("Score: 7-8", 1, 10).status
    'unparsed'
    >>> parse_score(None, 1, 10).reason
    'no text'
    """
    if not text:
        return ScoreParse(None, "unparsed", "no text")
    best = _last_claim(text, scale_max)
    if best is None:
        return ScoreParse(None, "unparsed", "no score found")
    return _checked_claim(best, text, scale_min, scale_max)


def _last_claim(text: str, scale_max: float) -> re.Match[str] | None:
    """The right-most score claim of any form, matched on a lower-cased copy of ``text``.

    >>> _last_claim("Score: 5 ... [[7]]", 10).group("value")
    '7'
    """
    low = text.lower()
    if len(low) != len(text):  # a few non-ASCII letters change length when lower-cased
        low = text.translate(_ASCII_LOWER)
    # Right-most claim wins. Each later search only looks right of the best claim so far,
    # so for the usual text (verdict at the end) every search stops almost at once.
    best = _last_anchored(low, ("score", "rating"), _KEYWORD, -1)
    brackets = _last_anchored(low, ("[[",), _BRACKETS, best.start() if best else -1)
    best = brackets or best
    fraction = _last_fraction(low, scale_max, best.start() if best else -1)
    return fraction or best


def _checked_claim(best: re.Match[str], text: str, scale_min: float, scale_max: float) -> ScoreParse:
    """The claim's score when it is one number on the scale; else why it is not."""
    claim = text[best.start() : best.end()].strip()
    if best.re is _KEYWORD:
        if best.group("range") is not None:
            return ScoreParse(None, "unparsed", f"ambiguous range {claim!r}")
        den = best.group("den")
        if den is not None and float(den) != scale_max:
            return ScoreParse(
                None, "unparsed", f"{claim!r} is not on the scale {_fmt(scale_min)}-{_fmt(scale_max)}"
            )
    value = float(best.group("value"))
    if not scale_min <= value <= scale_max:
        return ScoreParse(None, "unparsed", _out_of_scale(value, scale_min, scale_max))
    return ScoreParse(value, "ok", repr(claim))


def _last_anchored(
    low: str, anchors: tuple[str, ...], pattern: re.Pattern[str], floor: int
) -> re.Match[str] | None:
    """The match of ``pattern`` at the right-most anchor occurrence after ``floor`` where it matches."""
    best: re.Match[str] | None = None
    for anchor in anchors:
        end = len(low)
        while True:
            pos = low.rfind(anchor, floor + 1, end)
            if pos < 0:
                break
            m = pattern.match(low, pos)
            if m is not None:
                best, floor = m, pos
                break
            end = pos + len(anchor) - 1
    return best


def _last_fraction(low: str, scale_max: float, floor: int) -> re.Match[str] | None:
    """The right-most ``a/b`` or ``a out of b`` starting after ``floor`` whose denominator
    ``b`` is the scale max."""
    best: re.Match[str] | None = None
    for anchor in ("/", "out of"):
        end = len(low)
        while True:
            pos = low.rfind(anchor, floor + 1, end)
            if pos < 0:
                break
            end = pos + len(anchor) - 1
            head = _NUMBER_TAIL.search(low, max(floor + 1, pos - 24), pos)
            if head is None:
                continue
            m = _FRACTION.match(low, head.start())
            if m is not None and float(m.group("den")) == scale_max:
                best, floor = m, m.start()
                break
    return best


def parse_pairwise(text: str | None, scale_min: float, scale_max: float) -> PairParse:
    """Extract two scores (first answer, second answer) from a pairwise review.

    >>> parse_pairwise("9 8\\nAssistant 1 was more detailed.", 1, 10)
    PairParse(scores=(9.0, 8.0), status='ok', reason='first line')
    >>> parse_pairwise("8.5, 7\\n...", 1, 10).scores
    (8.5, 7.0)
    >>> parse_pairwise("Let me solve it.\\n... The output tuple is (10, 1).", 1, 10).scores
    (10.0, 1.0)
    >>> parse_pairwise("Solve it.\\nScores:\\nAssistant 1: 2 (wrong)\\nAssistant 2: 1", 1, 10).scores
    (2.0, 1.0)
    >>> parse_pairwise("0 7\\nAssistant 1 gave no answer.", 1, 10)
    PairParse(scores=None, status='unparsed', reason='first score: score 0 outside the scale 1-10')
    >>> parse_pairwise("Both were fine.", 1, 10).reason
    'no pair of scores found'
    """
    if not text:
        return PairParse(None, "unparsed", "no text")
    stripped = text.lstrip()
    first_line = stripped.split("\n", 1)[0]
    found: tuple[str, str, str] | None = None
    m = _PAIR_FIRST_LINE.match(first_line)
    if m is not None:
        found = (m.group("a"), m.group("b"), "first line")
    else:
        last: re.Match[str] | None = None
        for pattern in (_PAIR_TUPLE, _PAIR_LABELLED):
            for candidate in pattern.finditer(text):
                if last is None or candidate.start() > last.start():
                    last = candidate
        if last is not None:
            found = (last.group("a"), last.group("b"), f"last claim {last.group(0).strip()!r}")
    if found is None:
        return PairParse(None, "unparsed", "no pair of scores found")
    a, b = float(found[0]), float(found[1])
    for label, value in (("first", a), ("second", b)):
        problem = _out_of_scale(value, scale_min, scale_max)
        if problem is not None:
            return PairParse(None, "unparsed", f"{label} score: {problem}")
    return PairParse((a, b), "ok", found[2])
