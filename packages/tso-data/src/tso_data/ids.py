"""Content-hash ids. Every id is the first 16 hex digits of a SHA-256 over a few fields
joined by the unit separator, so re-ingesting or re-generating is idempotent.

The same functions are mirrored in SQL by :func:`sql_hash` so bulk ingest can compute ids
inside DuckDB; a test checks the two agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence

SEP = "\x1f"
ID_HEX_DIGITS = 16


def content_hash(kind: str, *parts: str) -> str:
    """Hash ``kind`` and ``parts`` into a 16-hex-digit id.

    >>> content_hash("prompt", '[{"role":"user","content":"hi"}]')
    'eb53908497de1ce2'
    """
    joined = SEP.join((kind, *parts))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:ID_HEX_DIGITS]


def canonical_messages(messages: Sequence[Mapping[str, str]]) -> str:
    """Canonical JSON of a conversation: only role and content, compact, key order fixed.

    >>> canonical_messages([{"content": "hi", "role": "user", "name": "x"}])
    '[{"role":"user","content":"hi"}]'
    """
    return json.dumps(
        [{"role": m["role"], "content": m["content"]} for m in messages],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def canonical_json(value: object) -> str:
    """Compact, key-sorted JSON (for sampling parameters and configs).

    >>> canonical_json({"top_p": 0.9, "temperature": 0.7})
    '{"temperature":0.7,"top_p":0.9}'
    """
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def prompt_id(messages: Sequence[Mapping[str, str]]) -> str:
    return content_hash("prompt", canonical_messages(messages))


def answer_id(prompt_id_: str, source: str, turns: Iterable[str]) -> str:
    """A human answer is identified by its prompt, source and text."""
    return content_hash("answer", prompt_id_, source, json.dumps(list(turns), ensure_ascii=False))


def response_id(prompt_id_: str, model: str, sampling_key: str, sample_index: int) -> str:
    """A model response: prompt + model + sampling parameters + sample index.

    ``sampling_key`` is :func:`canonical_json` of the sampling parameters for generated
    responses and ``"ingested"`` for responses loaded from files.
    """
    return content_hash("response", prompt_id_, model, sampling_key, str(sample_index))


def judgment_id(target_id: str, judge: str, rubric: str, rubric_version: str, key: str) -> str:
    """A judgment of one target (response or answer) by one judge with one rubric.

    ``key`` separates independent judgments of the same target: the sample index for
    generated judgments, an external reference (e.g. the review id) for ingested ones.
    """
    return content_hash("judgment", target_id, judge, rubric, rubric_version, key)


def verdict_id(target_1: str, target_2: str, judge: str, rubric: str, rubric_version: str,
               shown_first: int | None, sample_index: int) -> str:
    """A pairwise verdict: the two answers (in stored order: 1 = the baseline), the judge and
    its pairwise prompt, which answer was shown first (None = unknown) and the sample index."""
    return content_hash("verdict", target_1, target_2, judge, rubric, rubric_version,
                        str(shown_first or 0), str(sample_index))


def feedback_id(target_id: str, rubric: str, annotator: str, score: float, rationale: str) -> str:
    return content_hash("feedback", target_id, rubric, annotator, repr(float(score)), rationale)


def sql_hash(kind: str, *sql_parts: str) -> str:
    """The SQL expression DuckDB evaluates to get the same id as :func:`content_hash`.

    ``sql_parts`` are SQL expressions that evaluate to VARCHAR.

    >>> sql_hash("response", "prompt_id", "model")
    "substr(sha256(concat_ws(chr(31), 'response', prompt_id, model)), 1, 16)"
    """
    args = ", ".join((f"'{kind}'", *sql_parts))
    return f"substr(sha256(concat_ws(chr(31), {args})), 1, {ID_HEX_DIGITS})"
