"""The fields each kind of file carries, and the columns they are read from by default.

``--map FIELD=COLUMN`` and ``--set FIELD=VALUE`` bind a field to another column or to a
constant (:mod:`tso_data.ingest.mapping`); ``tso-data ingest KIND --help`` shows this table.
See docs/design.md, 3. The catalog.
"""

from __future__ import annotations

from tso_data.ingest.mapping import INT, LABEL, MESSAGES, NUMBER, TEXT, TEXT_LIST, Field

KINDS = ("prompts", "answers", "responses", "judgments", "feedback")
DEFAULT_SCALE = (1.0, 10.0)
SPLITS = ("train", "heldout")

_PROMPT_REF = Field(
    "prompt", LABEL, ("prompt_id", "question_id", "external_id", "id"),
    "the prompt: its catalog prompt_id or the external id it had in its source file",
)
_TURNS_HELP = "one text per user turn: a string, a list of strings, or several columns"

FIELDS: dict[str, tuple[Field, ...]] = {
    "prompts": (
        Field("messages", MESSAGES, ("messages", "conversation"), "a list of {role, content}"),
        Field("turns", TEXT_LIST, ("turns",), "user turns, e.g. --map turns=turn_1,turn_2", is_list=True),
        Field("prompt", TEXT, ("prompt", "instruction", "question"), "one user message"),
        Field("input", TEXT, ("input",), "appended to prompt after a blank line when not empty"),
        Field("system", TEXT, ("system", "system_prompt"), "a system message put first"),
        Field("source", LABEL, ("source",), "dataset / origin label"),
        Field("category", LABEL, ("category",)),
        Field("language", LABEL, ("language", "lang")),
        Field("external_id", LABEL, ("external_id", "id", "prompt_id", "question_id"), "the id in the source file"),
        Field("split", LABEL, ("split",), "'train' (default) or 'heldout'"),
    ),
    "answers": (
        _PROMPT_REF,
        Field("turns", TEXT_LIST, ("turns", "answer", "output", "human_output", "response", "text", "completion"),
              _TURNS_HELP, is_list=True),
        Field("source", LABEL, ("source",), "a human source (default 'human')"),
        Field("author", LABEL, ("author", "annotator")),
    ),
    "responses": (
        _PROMPT_REF,
        Field("model", LABEL, ("model", "model_id", "generator"), "a registered model name (or --model)"),
        Field("turns", TEXT_LIST, ("turns", "response", "output", "answer", "text", "completion"), _TURNS_HELP,
              is_list=True),
        Field("sample_index", INT, ("sample_index",), "several samples per prompt and model (default 0)"),
        Field("finish_reason", LABEL, ("finish_reason",)),
    ),
    "judgments": (
        Field("target_id", LABEL, ("target_id", "response_id"), "a response_id or answer_id of the catalog"),
        _PROMPT_REF,
        Field("model", LABEL, ("model", "source"), "the judged model (or a human source)"),
        Field("sample_index", INT, ("sample_index",), "the judged response's sample index (default 0)"),
        Field("score", NUMBER, ("score", "rating")),
        Field("judge", LABEL, ("judge", "judge_model", "reviewer")),
        Field("judge_version", LABEL, ("judge_version",)),
        Field("rubric", LABEL, ("rubric",), "default 'overall'"),
        Field("rubric_version", LABEL, ("rubric_version",), "default '1'"),
        Field("key", LABEL, ("key", "review_id"), "tells apart several judgments of one target"),
        Field("raw_text", TEXT, ("raw_text", "review_text", "review", "judgment", "explanation")),
    ),
    "feedback": (
        Field("target_id", LABEL, ("target_id", "response_id", "answer_id"), "a response_id or answer_id"),
        _PROMPT_REF,
        Field("model", LABEL, ("model", "source"), "the judged model (or a human source)"),
        Field("sample_index", INT, ("sample_index",)),
        Field("rubric", LABEL, ("rubric",), "default 'overall'"),
        Field("score", NUMBER, ("score", "corrected_score")),
        Field("rationale", TEXT, ("rationale", "explanation", "comment")),
        Field("annotator", LABEL, ("annotator",), "'human', 'human:<name>' or 'ai:<model>'"),
        Field("split", LABEL, ("split",), "'train' (default, judge SFT) or 'heldout' (agreement)"),
    ),
}


def field_help(kind: str) -> list[tuple[str, str, str]]:
    """(field, default columns, help) for ``kind``: what `tso-data ingest --help` lists (docs/catalog.md,
    "Ingest", shows the same)."""
    out = []
    for f in FIELDS[kind]:
        defaults = ", ".join(f.defaults) + (", turn_1, turn_2, ..." if f.is_list else "")
        out.append((f.name, defaults, f.help))
    return out
