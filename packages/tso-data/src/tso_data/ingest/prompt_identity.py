"""A prompt's identity beyond its text: its (source, external id) and its split.

Answers, responses and judgments name prompts by the id they had in their source file.
If a second prompt could take an existing (source, external id), every later ingest that
names that id would stop as 'ambiguous'; so a new prompt reusing one is refused where it
comes in. A known prompt met again with another split is a conflict (a held-out prompt
must not quietly stay in train, or the reverse), reported with the way to change it.

Both checks run on the staged rows of one prompts file (``stage``: one row per record with
``prompt_id``, ``source``, ``external_id``, ``split``; ``firsts``: the first row of each
prompt_id), inside the file's transaction, before anything is written.
"""

from __future__ import annotations

from typing import Protocol


class _Job(Protocol):
    con: object

    def fail_if(self, where: str, field_name: str, message: str, table: str = "stage") -> None: ...



def _refuse(job: _Job, bad_rows_sql: str, field_name: str, message: str) -> None:
    """Fail on the first row of ``bad_rows_sql`` (columns ``__row``, the field, ``__extra``)."""
    job.con.execute(f"CREATE OR REPLACE TEMP TABLE stage_bad AS {bad_rows_sql}")  # type: ignore[attr-defined]
    job.fail_if("true", field_name, message, table="stage_bad")


def check_external_ids(job: _Job) -> None:
    """(source, external_id) names one prompt: inside the file and against the catalog."""
    _refuse(
        job,
        "WITH ids AS (SELECT source, external_id, prompt_id, min(__row) AS r FROM stage "
        "  WHERE external_id IS NOT NULL GROUP BY ALL), "
        "firsts_by_id AS (SELECT source, external_id, arg_min(prompt_id, r) AS pid, min(r) AS r0 "
        "  FROM ids GROUP BY ALL) "
        "SELECT i.r AS __row, i.external_id, f.r0 AS __extra FROM ids i JOIN firsts_by_id f "
        "ON f.source IS NOT DISTINCT FROM i.source AND f.external_id = i.external_id WHERE i.prompt_id <> f.pid",
        "external_id",
        "external id {value!r} already names a different prompt on line/row {extra} "
        "(same source): give each prompt its own id",
    )
    _refuse(
        job,
        "SELECT f.__row, f.external_id, "
        "'source ' || coalesce('''' || f.source || '''', '(none)') || ' already names the catalog''s prompt ' "
        "|| any_value(p.prompt_id) AS __extra "
        "FROM firsts f JOIN prompts p ON p.external_id = f.external_id AND p.source IS NOT DISTINCT FROM f.source "
        "AND p.prompt_id <> f.prompt_id "
        "WHERE f.external_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM prompts q WHERE q.prompt_id = f.prompt_id) "
        "GROUP BY f.__row, f.external_id, f.source",
        "external_id",
        "external id {value!r} of {extra}, with another text; a new prompt needs a new id "
        "(or its own source: --set source=NAME)",
    )


def check_splits(job: _Job) -> None:
    """A prompt's split given in the file must agree with itself and with the catalog."""
    _refuse(
        job,
        "SELECT s.__row, coalesce(s.split, 'train') AS split, "
        "f.__row || ' gives it ''' || coalesce(f.split, 'train') || '''' AS __extra "
        "FROM stage s JOIN firsts f USING (prompt_id) WHERE coalesce(s.split, 'train') <> coalesce(f.split, 'train')",
        "split",
        "conflict: split {value!r} for a prompt that line/row {extra}",
    )
    _refuse(
        job,
        "SELECT s.__row, s.split, '''' || p.split || ''' (prompt_id ' || p.prompt_id || ')' AS __extra "
        "FROM stage s JOIN prompts p USING (prompt_id) WHERE s.split IS NOT NULL AND s.split <> p.split",
        "split",
        "conflict: the catalog holds this prompt with split {extra}, not {value!r}; ingest never moves "
        'a prompt between splits (change it with `tso-data sql --write "UPDATE prompts SET split = ..."`)',
    )
