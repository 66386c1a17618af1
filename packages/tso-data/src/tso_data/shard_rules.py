"""The rules a shard's rows must meet before they are merged into their table.

Shards are written by `generate` and `judge` workers, but a shard directory is only a
directory: a file planted there (by hand, by a bug, by ``COPY ... TO``) would otherwise be
merged as it is, and a judgment with status 'ok' and a NaN score would silently change
every τ and pair built after it. :func:`check_shard_rows` checks the staged rows of one
merge against the table's rules, in SQL, and names the first bad row by file, row and
field; the merge then stores nothing.
"""

from __future__ import annotations

import duckdb

from tso_data.errors import TSODataError

_HEX_ID = "^[0-9a-f]{16}$"


def _id(col: str) -> tuple[str, str, str]:
    return (col, f"{col} IS NULL OR NOT regexp_full_match({col}, '{_HEX_ID}')",
            "expected a 16-hex-digit id, got {value!r}")


def _required(col: str) -> tuple[str, str, str]:
    return col, f"{col} IS NULL", "missing value"


def _finite_or_null(col: str) -> tuple[str, str, str]:
    return col, f"{col} IS NOT NULL AND NOT isfinite({col})", "expected a finite number, got {value!r}"


# table -> [(field, SQL condition that a bad row meets, message)]; {value} is the field's value
RULES: dict[str, list[tuple[str, str, str]]] = {
    "responses": [
        _id("response_id"),
        _id("prompt_id"),
        _required("model"),
        ("sample_index", "sample_index IS NULL OR sample_index < 0", "expected an integer >= 0, got {value!r}"),
        ("turns", "turns IS NULL OR len(turns) = 0 OR list_contains(turns, NULL)", "expected one text per user turn"),
        _required("sampling"),
        _required("backend"),
        ("prompt_tokens", "prompt_tokens < 0", "expected a count >= 0, got {value!r}"),
        ("completion_tokens", "completion_tokens < 0", "expected a count >= 0, got {value!r}"),
        _finite_or_null("latency_s"),
        _required("created_at"),
    ],
    "judgments": [
        _id("judgment_id"),
        _id("target_id"),
        _id("prompt_id"),
        ("target_kind", "target_kind IS NULL OR target_kind NOT IN ('response', 'answer')",
         "expected 'response' or 'answer', got {value!r}"),
        _required("source"),
        _required("judge"),
        _required("rubric"),
        _required("rubric_version"),
        ("sample_index", "sample_index IS NULL OR sample_index < 0", "expected an integer >= 0, got {value!r}"),
        ("status", "status IS NULL OR status NOT IN ('ok', 'unparsed', 'error')",
         "expected 'ok', 'unparsed' or 'error', got {value!r}"),
        ("score", "(status = 'ok') <> (score IS NOT NULL)",
         "a score is stored exactly when status is 'ok' (got {value!r})"),
        _finite_or_null("score"),
        _finite_or_null("scale_min"),
        _finite_or_null("scale_max"),
        ("scale_min", "status = 'ok' AND (scale_min IS NULL OR scale_max IS NULL OR scale_min >= scale_max)",
         "an ok judgment needs its scale: scale_min < scale_max"),
        ("score", "status = 'ok' AND (score < scale_min OR score > scale_max)",
         "{value!r} is outside the judgment's scale"),
        ("attempts", "attempts IS NULL OR attempts < 0", "expected an integer >= 0, got {value!r}"),
        _required("created_at"),
    ],
    "failures": [
        _id("failure_id"),
        ("task", "task IS NULL OR task NOT IN ('generate', 'judge')", "expected 'generate' or 'judge', got {value!r}"),
        _required("model"),
        _required("error"),
        ("attempts", "attempts IS NULL OR attempts < 0", "expected an integer >= 0, got {value!r}"),
        _required("created_at"),
    ],
}


def check_shard_rows(con: duckdb.DuckDBPyConnection, staged: str, table: str, columns: list[str]) -> None:
    """Raise a one-line error for the first row of the temp table ``staged`` (columns of
    ``table`` plus ``filename`` and ``file_row_number``) that breaks a rule of ``table``."""
    present = {r[0] for r in con.execute(f"DESCRIBE {staged}").fetchall()}
    missing = [c for c in columns if c not in present]
    if missing:
        first = con.execute(f"SELECT min(filename) FROM {staged}").fetchone()
        raise TSODataError(
            f"{first[0] if first else 'shard'}: not a {table} shard: column(s) {', '.join(missing)} missing; "
            f"nothing was merged (move the file out of the shards directory)"
        )
    for field, bad, message in RULES.get(table, []):
        row = con.execute(
            f"SELECT filename, file_row_number, CAST({field} AS VARCHAR) FROM {staged} WHERE {bad} "
            "ORDER BY filename, file_row_number LIMIT 1"
        ).fetchone()
        if row is not None:
            raise TSODataError(
                f"{row[0]}:{row[1] + 1}: field '{field}': {message.format(value=row[2])}; nothing was merged "
                "(the shard breaks the table's rules: move it out of the shards directory)"
            )
