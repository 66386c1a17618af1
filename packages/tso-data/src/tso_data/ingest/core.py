"""Load files into the catalog: one transaction per file, all checks before any write.

The work is column-wise SQL inside DuckDB (ids with :func:`tso_data.ids.sql_hash`, an
anti-join on the key), so a million-row Parquet file costs no per-row Python. Every check
names the file, the line (JSONL/CSV) or row (Parquet/HF) and the field; any failure rolls
the file's transaction back, so the catalog is exactly as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from tso_data import ids
from tso_data.catalog import HUMAN_SOURCE, Catalog, table_columns
from tso_data.errors import TSODataError, located
from tso_data.ingest.mapping import (
    INT,
    LABEL,
    MESSAGES,
    NUMBER,
    TEXT,
    TEXT_LIST,
    Binding,
    Field,
    resolve,
)
from tso_data.ingest.prompt_identity import check_external_ids, check_splits
from tso_data.ingest.readers import SQL_TYPES, Source, check_value, open_source, qi
from tso_data.ingest.report import FileReport, IngestReport
from tso_data.schema import key_of
from tso_data.staged_write import StagedWrite, write_in_chunks

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
        Field("turns", TEXT_LIST, ("turns", "answer", "output", "human_output", "response", "text", "completion"), _TURNS_HELP, is_list=True),
        Field("source", LABEL, ("source",), "a human source (default 'human')"),
        Field("author", LABEL, ("author", "annotator")),
    ),
    "responses": (
        _PROMPT_REF,
        Field("model", LABEL, ("model", "model_id", "generator"), "a registered model name (or --model)"),
        Field("turns", TEXT_LIST, ("turns", "response", "output", "answer", "text", "completion"), _TURNS_HELP, is_list=True),
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


@dataclass
class IngestOptions:
    model: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    prompt_source: str | None = None  # restrict external-id lookups to prompts of this source
    scale: tuple[float, float] | None = DEFAULT_SCALE  # judgments outside it are not ok
    hf_split: str | None = None
    rubric_scales: dict[str, tuple[float, float]] = field(default_factory=dict)  # feedback: per rubric file


ProgressHook = Callable[[str, int | None, int | None], None]  # (stage, done, total)


def ingest_files(
    catalog: Catalog,
    kind: str,
    paths: Sequence[str | Path],
    *,
    model: str | None = None,
    mapping: dict[str, str] | None = None,
    constants: dict[str, str] | None = None,
    prompt_source: str | None = None,
    scale: tuple[float, float] | None = DEFAULT_SCALE,
    hf_split: str | None = None,
    progress: ProgressHook | None = None,
    on_file: Callable[[FileReport], None] | None = None,
) -> IngestReport:
    """Ingest ``paths`` as ``kind`` (one of :data:`KINDS`), one transaction per file.

    Files are processed in order; the first bad file raises :class:`TSODataError` after
    the files before it were committed (``on_file`` sees each committed file's report).
    """
    if kind not in KINDS:
        raise TSODataError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    options = IngestOptions(model, dict(mapping or {}), dict(constants or {}), prompt_source, scale, hf_split)
    if model is not None:
        if kind not in ("responses",):
            raise TSODataError("--model applies to responses only (judgments and feedback: --set model=NAME)")
        options.constants["model"] = model
    if kind == "feedback":
        from tso_data.judge.rubrics import available_rubrics, rubric_dirs

        rubrics = available_rubrics(rubric_dirs(catalog.root))
        options.rubric_scales = {name: (r.scale_min, r.scale_max) for name, r in rubrics.items()}
    report = IngestReport()
    for raw in paths:
        file_report = ingest_file(catalog, kind, Path(raw), options, progress)
        report.files.append(file_report)
        if on_file is not None:
            on_file(file_report)
    return report


def ingest_file(
    catalog: Catalog, kind: str, path: Path, options: IngestOptions, progress: ProgressHook | None = None
) -> FileReport:
    started = time.monotonic()

    def read_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("read", done, total)

    source = open_source(path, read_progress, options.hf_split)
    bindings = resolve(FIELDS[kind], source.columns, options.mapping, options.constants, kind=kind, path=path)
    report = FileReport(str(path), kind, source.format, notes=list(source.notes))
    if progress is not None:
        progress("check", None, None)
    # staged and checked beside readers; the write lock only for the INSERTs (staged_write)
    with StagedWrite(catalog) as staged:
        job = _checked_job(staged.con, kind, path, source, bindings, options, report)
        if progress is not None:
            progress("write", None, None)

        def recheck() -> _FileJob:  # another writer committed meanwhile: check again, under the lock
            fresh = FileReport(str(path), kind, source.format, notes=list(source.notes))
            return _checked_job(staged.con, kind, path, source, bindings, options, fresh)

        job, new = write_in_chunks(staged, job, recheck)
    job.report.new = new
    job.report.existing = job.report.rows - job.report.duplicates - new
    job.report.seconds = time.monotonic() - started
    return job.report


def _checked_job(
    con: duckdb.DuckDBPyConnection, kind: str, path: Path, source: Source, bindings: dict[str, Binding],
    options: IngestOptions, report: FileReport,
) -> "_FileJob":
    """Stage the file and run every check of its kind; the rows are written by ``job.write()``."""
    job = _FileJob(con, path, source, dict(bindings), report, options)
    job.stage()
    _WRITERS[kind](job)
    return job


class _FileJob:
    """One file inside one open transaction: the staged rows and the checks on them."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: Path,
        source: Source,
        bindings: dict[str, Binding],
        report: FileReport,
        options: IngestOptions,
    ) -> None:
        self.con = con
        self.path = path
        self.source = source
        self.b = bindings
        self.report = report
        self.options = options
        self.pending_rows = 0  # rows staged for the final INSERTs (stage_final)
        self.final_table = ""

    # -- staging ----------------------------------------------------------------------

    def stage(self) -> None:
        """Register the file as ``src`` and build ``stage``: one record per (row, part)
        with one column per bound field in the catalog's types."""
        wanted: dict[str, str] = {}
        for b in self.b.values():
            for col in b.columns:
                if b.field.is_list:
                    want = TEXT if len(b.columns) > 1 else TEXT_LIST
                else:
                    want = b.field.type
                if wanted.get(col, want) != want:
                    raise TSODataError(f"{self.path}: column '{col}' is mapped to fields of different types")
                wanted[col] = want
        self.n_src = self.source.register(self.con, wanted)
        # list fields: a missing or null item is an error here, where the column is known
        for b in self.b.values():
            if b.field.is_list:
                for col in b.columns:
                    self.fail_if(f"{qi(col)} IS NULL", col, "missing value", table="src")
        parts = {len(b.columns) for b in self.b.values() if not b.field.is_list and len(b.columns) > 1}
        if len(parts) > 1:
            raise TSODataError(f"{self.path}: fields split over several columns must all list the same number of columns")
        self.n_parts = parts.pop() if parts else 1
        # Responses can be millions of long texts: their turns stay in `src` (the Parquet
        # file itself, for Parquet) and `stage` keeps only a fingerprint, the number of
        # turns and of empty turns; the texts are read once more, by the final INSERT.
        self.light = self.report.kind == "responses"
        self.light_exprs: dict[str, str] = {}
        selects = []
        for i in range(self.n_parts):
            exprs = ["__row", f"{i} AS __part"]
            for f in FIELDS[self.report.kind]:
                expr = self._expr(f, i)
                if self.light and f.is_list:
                    self.light_exprs[f.name] = expr
                    exprs += [
                        f"hash({expr}) AS {f.name}_fp",
                        f"len({expr}) AS {f.name}_len",
                        f"len(list_filter({expr}, lambda t: trim(t) = '')) AS {f.name}_empty",
                    ]
                    continue
                exprs.append(f"{expr} AS {f.name}")
            exprs.extend(f"{sql} AS {name}" for name, sql in self._extra_exprs().items())
            selects.append(f"SELECT {', '.join(exprs)} FROM src")
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE stage AS {' UNION ALL '.join(selects)}")
        self.report.rows = self.count("stage")

    def _expr(self, f: Field, part: int) -> str:
        b = self.b.get(f.name)
        typ = "VARCHAR[]" if f.is_list else SQL_TYPES[f.type]
        if b is None:
            return f"CAST(NULL AS {typ})"
        if b.constant is not None:
            try:
                value = check_value(b.constant, f.type, from_csv=True)
            except ValueError as exc:
                raise TSODataError(f"--set {f.name}={b.constant}: {exc}") from None
            if f.is_list:
                value = [value] if isinstance(value, str) else value
            return f"CAST({_literal(value)} AS {typ})"
        if f.is_list:
            if len(b.columns) > 1:
                return f"list_value({', '.join(qi(c) for c in b.columns)})"
            return qi(b.columns[0])
        return qi(b.columns[part] if len(b.columns) > 1 else b.columns[0])

    def _extra_exprs(self) -> dict[str, str]:
        # A pairwise review row judges several answers: by default each judgment's key
        # names the whole pairing, so the same answer judged in several pairings stays
        # several judgments.
        model = self.b.get("model")
        if self.report.kind == "judgments" and "key" not in self.b and model and len(model.columns) > 1:
            return {"pair_key": "'pair:' || concat_ws(' vs ', " + ", ".join(qi(c) for c in model.columns) + ")"}
        return {}

    # -- checks -----------------------------------------------------------------------

    def label(self, name: str) -> str:
        b = self.b.get(name)
        return b.label if b is not None else name

    def count(self, table: str) -> int:
        row = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def fail_if(self, where: str, field_name: str, message: str, table: str = "stage") -> None:
        """Raise a located error for the first row of ``table`` matching ``where``.

        ``message`` may use {value} (the field's value on that row, when ``field_name``
        is a column of ``table``) and {extra} (the ``__extra`` column, if the table has one).
        """
        has_extra = "{extra" in message
        has_value = "{value" in message
        has_part = table == "stage" or table.startswith("stage_")
        cols = [
            "__row",
            "__extra" if has_extra else "NULL",
            qi(field_name) if has_value else "NULL",
            "__part" if has_part and "__part" in _columns(self.con, table) else "0",
        ]
        row = self.con.execute(
            f"SELECT {', '.join(cols)} FROM {table} WHERE {where} ORDER BY __row LIMIT 1"
        ).fetchone()
        if row is not None:
            shown = self.label(field_name)
            b = self.b.get(field_name)
            if b is not None and not b.field.is_list and len(b.columns) > 1:
                shown = b.columns[row[3]]
            raise located(self.path, row[0], shown, message.format(extra=row[1], value=row[2]))

    def require(self, name: str, hint: str = "") -> None:
        """The field must be bound and non-null on every row."""
        if name not in self.b:
            f = next(f for f in FIELDS[self.report.kind] if f.name == name)
            tried = ", ".join(repr(c) for c in f.defaults) or "none"
            raise located(
                self.path, self.first_row(), name,
                f"missing (no column {tried}; map one with --map {name}=COLUMN{' or ' + hint if hint else ''})",
            )
        self.fail_if(f"{name} IS NULL", name, "missing value")

    def first_row(self) -> int | None:
        row = self.con.execute("SELECT min(__row) FROM src").fetchone()
        return row[0] if row else None

    def check_choice(self, name: str, choices: Sequence[str]) -> None:
        allowed = ", ".join(f"'{c}'" for c in choices)
        self.fail_if(f"{name} IS NOT NULL AND {name} NOT IN ({allowed})", name, f"{{value!r}} is not one of {allowed}")

    # -- shared resolution steps -------------------------------------------------------

    def resolve_prompts(self) -> None:
        """Add ``prompt_id`` and ``n_turns`` to ``stage`` from the ``prompt`` reference:
        a catalog prompt_id, else a unique prompts.external_id."""
        self.require("prompt", "--set prompt=ID")
        con = self.con
        src_filter = ""
        params: list[object] = []
        if self.options.prompt_source is not None:
            src_filter = " AND p.source = ?"
            params = [self.options.prompt_source]
        con.execute("CREATE OR REPLACE TEMP TABLE refs AS SELECT DISTINCT prompt AS ref FROM stage")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE ref_hits AS "
            "SELECT r.ref, p.prompt_id, p.source, p.n_turns FROM refs r JOIN prompts p ON p.prompt_id = r.ref "
            "UNION ALL "
            "SELECT r.ref, p.prompt_id, p.source, p.n_turns FROM refs r JOIN prompts p ON p.external_id = r.ref"
            f"{src_filter} WHERE r.ref NOT IN (SELECT prompt_id FROM prompts)",
            params,
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE refmap AS SELECT ref, any_value(prompt_id) AS prompt_id, "
            "any_value(n_turns) AS n_turns, count(DISTINCT prompt_id) AS n, "
            "string_agg(DISTINCT coalesce(source, '(no source)'), ', ') AS sources FROM ref_hits GROUP BY ref"
        )
        where = f" of source '{self.options.prompt_source}'" if self.options.prompt_source else ""
        self.fail_if(
            "prompt NOT IN (SELECT ref FROM refmap)", "prompt",
            f"no prompt{where} with prompt_id or external id {{value!r}} in the catalog; ingest the prompts first",
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE stage_amb AS SELECT s.__row, s.prompt, "
            "m.n || ' prompts (sources: ' || m.sources || ')' AS __extra "
            "FROM stage s JOIN refmap m ON s.prompt = m.ref WHERE m.n > 1"
        )
        self.fail_if(
            "true", "prompt",
            "external id {value!r} is ambiguous: it matches {extra}; pass --prompt-source SOURCE",
            table="stage_amb",
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE stage AS SELECT s.*, m.prompt_id, m.n_turns "
            "FROM stage s JOIN refmap m ON s.prompt = m.ref"
        )

    def check_turns(self, allow_empty: bool) -> None:
        if self.light:
            if "turns" not in self.b:
                self.require("turns")
            n, n_empty = "turns_len", "turns_empty"
        else:
            self.require("turns")
            n, n_empty = "len(turns)", "len(list_filter(turns, lambda t: trim(t) = ''))"
        self.fail_if(f"{n} = 0", "turns", "no turns")
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT __row, "
            f"{n} || ' turn(s) given, the prompt has ' || n_turns || ' user turn(s) to answer' AS __extra "
            f"FROM stage WHERE {n} <> n_turns"
        )
        self.fail_if("true", "turns", "{extra}", table="stage_bad")
        if not allow_empty:
            self.fail_if(f"{n_empty} > 0", "turns", "empty text")
        else:
            empty = self.con.execute(f"SELECT count(*) FROM stage WHERE {n_empty} > 0").fetchone()
            if empty and empty[0]:
                self.report.notes.append(f"{empty[0]} row(s) with an empty turn (kept: a model may answer nothing)")

    def check_models(self, human_ok: bool) -> None:
        """``model`` must name a row of ``models``; adds ``model_kind`` to stage."""
        self.require("model", "--model NAME" if self.report.kind == "responses" else "--set model=NAME")
        known = [r[0] for r in self.con.execute("SELECT name FROM models ORDER BY name").fetchall()]
        shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        # Exact name first; else a unique case-insensitive match (MT-Bench's responses say
        # 'RWKV-4-Raven-14B' for the model its models.jsonl calls 'rwkv-4-raven-14b').
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE model_map AS SELECT d.model, coalesce(e.name, ci.name) AS name, "
            "coalesce(e.kind, ci.kind) AS kind FROM (SELECT DISTINCT model FROM stage) d "
            "LEFT JOIN models e ON e.name = d.model "
            "LEFT JOIN (SELECT lower(name) AS lname, any_value(name) AS name, any_value(kind) AS kind "
            "  FROM models GROUP BY 1 HAVING count(*) = 1) ci ON ci.lname = lower(d.model)"
        )
        self.fail_if(
            "model IN (SELECT model FROM model_map WHERE name IS NULL)", "model",
            f"unknown model {{value!r}} (known: {shown}); register it with "
            "`tso-data models add NAME --family F --version V --size-b S` or `tso-data models import FILE`",
        )
        for given, name in self.con.execute(
            "SELECT model, name FROM model_map WHERE name <> model ORDER BY model"
        ).fetchall():
            self.report.notes.append(f"model {given!r} stored as the registered {name!r} (case differs)")
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE stage AS SELECT s.* EXCLUDE (model), m.name AS model, m.kind AS model_kind "
            "FROM stage s JOIN model_map m ON m.model = s.model"
        )
        if not human_ok:
            self.fail_if("model_kind = 'human'", "model", "{value!r} is a human source: ingest its texts as answers")

    def resolve_targets(self) -> None:
        """Add ``target_id``, ``target_kind``, ``prompt_id`` and ``source`` to stage (judgments,
        feedback): from an explicit target_id, or from prompt + model (+ sample_index)."""
        con = self.con
        if "target_id" in self.b:
            self.require("target_id")
            con.execute(
                "CREATE OR REPLACE TEMP TABLE stage AS SELECT s.* EXCLUDE (target_id), s.target_id AS target_ref, "
                "t.id AS target_id, t.target_kind, t.prompt_id AS prompt_id, t.source AS judged_source FROM stage s LEFT JOIN ("
                "SELECT response_id AS id, 'response' AS target_kind, prompt_id, model AS source FROM responses "
                "UNION ALL SELECT answer_id, 'answer', prompt_id, source FROM answers) t ON t.id = s.target_id"
            )
            self.b["target_ref"] = self.b["target_id"]
            self.fail_if(
                "target_id IS NULL", "target_ref",
                "no response or answer with id {value!r} in the catalog",
            )
            return
        self.resolve_prompts()
        self.check_models(human_ok=True)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE stage AS SELECT s.* EXCLUDE (target_id), "
            "coalesce(r.response_id, a.answer_id) AS target_id, "
            "CASE WHEN s.model_kind = 'human' THEN 'answer' ELSE 'response' END AS target_kind, "
            "s.model AS judged_source, a.n_answers "
            "FROM stage s "
            "LEFT JOIN responses r ON s.model_kind = 'model' AND r.prompt_id = s.prompt_id "
            "  AND r.model = s.model AND r.sample_index = coalesce(s.sample_index, 0) "
            "LEFT JOIN (SELECT prompt_id, source, any_value(answer_id) AS answer_id, count(*) AS n_answers "
            "  FROM answers GROUP BY ALL) a ON s.model_kind = 'human' AND a.prompt_id = s.prompt_id AND a.source = s.model"
        )
        self.fail_if(
            "model_kind = 'human' AND n_answers > 1", "model",
            "prompt has several answers from {value!r}: give the answer_id (--map target_id=COLUMN)",
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT __row, __part, model, "
            "'prompt ' || prompt || CASE WHEN model_kind = 'human' THEN '' "
            "ELSE ', sample_index ' || coalesce(sample_index, 0) END AS __extra FROM stage WHERE target_id IS NULL"
        )
        self.fail_if(
            "true", "model",
            "nothing from {value!r} to judge for {extra}; ingest its responses/answers first",
            table="stage_bad",
        )

    def dedupe(
        self, key: str, content: Sequence[str], table: str, hint: str = "", stage_fp: str | None = None
    ) -> str:
        """Check that rows sharing ``key`` share their ``content`` columns, inside the file
        and against the catalog ``table``; count in-file duplicates; return the SQL of
        the unique rows (the first of each key)."""
        con = self.con

        def fingerprint(alias: str) -> str:
            if alias == "s" and stage_fp is not None:
                return f"s.{stage_fp}"  # the same hash, computed when staging
            return "hash(" + ", ".join(f"{alias}.{c}" for c in content) + ")"

        con.execute(
            f"CREATE OR REPLACE TEMP TABLE firsts AS SELECT {key}, min(__row) AS first_row, "
            f"arg_min({fingerprint('s')}, __row * 1000 + __part) AS fp FROM stage s GROUP BY {key}"
        )
        unique = self.count("firsts")
        self.report.duplicates = self.report.rows - unique
        if self.report.duplicates:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT s.__row, f.first_row AS __extra, s.{key} "
                f"FROM stage s JOIN firsts f USING ({key}) WHERE {fingerprint('s')} <> f.fp"
            )
            self.fail_if(
                "true", key,
                f"same {key} {{value}} as line/row {{extra}} but different content{hint}",
                table="stage_bad",
            )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT f.first_row AS __row, f.{key} FROM firsts f "
            f"JOIN {table} t USING ({key}) WHERE {fingerprint('t')} <> f.fp"
        )
        self.fail_if(
            "true", key,
            f"the catalog already holds {key} {{value}} with different content{hint}",
            table="stage_bad",
        )
        if self.report.duplicates:
            return f"SELECT * FROM stage QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY __row, __part) = 1"
        return "SELECT * FROM stage"

    def insert(self, table: str, select_sql: str, unique: int) -> None:
        """Stage the rows of ``select_sql`` (the table's columns, unique keys) that ``table``
        lacks as the file's final rows; :meth:`write_rows` inserts them."""
        key = key_of(table)
        self.stage_final(
            table,
            f"SELECT * FROM ({select_sql}) AS src WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.{key} = src.{key})",
            unique,
        )

    def stage_final(self, table: str, new_rows_sql: str, unique: int) -> None:
        """The rows to insert, numbered, read while the catalog is still only read: under
        the write lock only the INSERTs run (:meth:`write_rows`)."""
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE final_rows AS SELECT *, row_number() OVER () - 1 AS __n FROM ({new_rows_sql})"
        )
        self.final_table = table
        self.report.new = self.pending_rows = self.count("final_rows")
        self.report.existing = unique - self.report.new

    def write_rows(self, start: int, stop: int) -> int:
        """Insert final rows ``start <= __n < stop`` (inside the caller's write transaction)."""
        cols = ", ".join(table_columns(self.con, self.final_table))
        rows = self.con.execute(
            f"INSERT INTO {self.final_table} ({cols}) SELECT {cols} FROM final_rows "
            f"WHERE __n >= {int(start)} AND __n < {int(stop)}"
        ).fetchall()
        return int(rows[0][0]) if rows else 0


# -- per-kind writers -------------------------------------------------------------------


def _write_prompts(job: _FileJob) -> None:
    con = job.con
    chosen = next((n for n in ("messages", "turns", "prompt") if n in job.b), None)
    if chosen is None:
        raise located(
            job.path, job.first_row(), "prompt",
            "missing: no 'messages', 'turns' or 'prompt' column; map one, e.g. --map prompt=COLUMN "
            "or --map turns=turn_1,turn_2",
        )
    job.require(chosen)
    if chosen == "messages":
        msgs = "messages"
    elif chosen == "turns":
        msgs = "list_transform(turns, lambda t: {'role': 'user', 'content': t})"
    else:
        msgs = (
            "[{'role': 'user', 'content': CASE WHEN input IS NULL OR trim(input) = '' THEN prompt "
            "ELSE prompt || chr(10) || chr(10) || input END}]"
        )
    msgs = f"CASE WHEN system IS NULL OR trim(system) = '' THEN {msgs} ELSE list_prepend({{'role': 'system', 'content': system}}, {msgs}) END"
    con.execute(f"CREATE OR REPLACE TEMP TABLE stage AS SELECT * EXCLUDE (messages), {msgs} AS messages FROM stage")
    job.b.setdefault("messages", job.b[chosen])
    job.fail_if("len(messages) = 0", "messages", "empty prompt (no messages)")
    job.fail_if(
        "len(list_filter(messages, lambda m: m.content IS NULL OR trim(m.content) = '')) > 0",
        chosen, "empty prompt (a message has no text)",
    )
    job.fail_if(
        "len(list_filter(messages, lambda m: m.role IS NULL OR m.role NOT IN ('system', 'user', 'assistant'))) > 0",
        chosen, "a message role is not 'system', 'user' or 'assistant'",
    )
    job.fail_if("messages[-1].role <> 'user'", chosen, "the last message must be from the user")
    job.check_choice("split", SPLITS)
    roles_rev = "list_reverse(list_transform(messages, lambda m: m.role))"
    n_turns = (
        f"len(list_filter(CASE WHEN list_position({roles_rev}, 'assistant') IS NULL THEN {roles_rev} "
        f"ELSE list_slice({roles_rev}, 1, list_position({roles_rev}, 'assistant') - 1) END, lambda r: r = 'user'))"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT *, "
        f"{ids.sql_hash('prompt', 'to_json(messages)')} AS prompt_id, {n_turns} AS n_turns FROM stage"
    )
    _patch_python_ids(con, "prompt_id", "messages", lambda m: ids.prompt_id(m))
    # The same prompt twice in one file: the first row's labels win (not a conflict), but
    # its split and its (source, external id) must hold together (ingest.prompt_identity).
    con.execute("CREATE OR REPLACE TEMP TABLE firsts AS SELECT * FROM stage QUALIFY row_number() OVER (PARTITION BY prompt_id ORDER BY __row, __part) = 1")
    check_splits(job)
    check_external_ids(job)
    unique = job.count("firsts")
    job.report.duplicates = job.report.rows - unique
    job.insert(
        "prompts",
        "SELECT prompt_id, messages, n_turns, source, category, language, external_id, "
        "coalesce(split, 'train') AS split, now() AS added_at FROM firsts",
        unique,
    )


def _write_answers(job: _FileJob) -> None:
    con = job.con
    job.resolve_prompts()
    job.check_turns(allow_empty=False)
    con.execute(f"CREATE OR REPLACE TEMP TABLE stage AS SELECT * EXCLUDE (source), coalesce(source, '{HUMAN_SOURCE}') AS source FROM stage")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT s.__row, s.source FROM stage s "
        "LEFT JOIN models m ON m.name = s.source WHERE m.kind IS DISTINCT FROM 'human'"
    )
    job.fail_if("true", "source", "{value!r} is not a human source of this catalog (answers are human-written; model outputs go to `ingest responses`)", table="stage_bad")
    turns_json = "'[' || array_to_string(list_transform(turns, lambda t: to_json(t)), ', ') || ']'"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT *, "
        f"{ids.sql_hash('answer', 'prompt_id', 'source', turns_json)} AS answer_id FROM stage"
    )
    _patch_python_ids(con, "answer_id", "turns", None, answer_args=True)
    unique_sql = job.dedupe("answer_id", ["turns"], "answers")
    con.execute(f"CREATE OR REPLACE TEMP TABLE firsts AS {unique_sql}")
    job.insert(
        "answers",
        "SELECT answer_id, prompt_id, source, turns, author, now() AS added_at FROM firsts",
        job.count("firsts"),
    )


def _write_responses(job: _FileJob) -> None:
    con = job.con
    job.resolve_prompts()
    job.check_models(human_ok=False)
    job.check_turns(allow_empty=True)
    job.fail_if("sample_index < 0 OR sample_index > 2147483647", "sample_index", "{value} is not an index from 0 to 2^31 - 1")
    sid = ids.sql_hash("response", "prompt_id", "model", "'ingested'", "CAST(coalesce(sample_index, 0) AS VARCHAR)")
    con.execute(f"CREATE OR REPLACE TEMP TABLE stage AS SELECT *, {sid} AS response_id FROM stage")
    hint = "; several samples per prompt and model need a sample_index column (--map sample_index=COLUMN)"
    unique_sql = job.dedupe("response_id", ["turns"], "responses", hint, stage_fp="turns_fp")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE new_rows AS SELECT * FROM ({unique_sql}) f "
        "WHERE NOT EXISTS (SELECT 1 FROM responses t WHERE t.response_id = f.response_id)"
    )
    # the texts are read from the file again only for the new rows
    job.stage_final(
        "responses",
        "SELECT f.response_id, f.prompt_id, f.model, coalesce(f.sample_index, 0)::INTEGER AS sample_index, "
        "x.__turns AS turns, 'ingested' AS sampling, 'ingested' AS backend, NULL::INTEGER AS prompt_tokens, "
        "NULL::INTEGER AS completion_tokens, f.finish_reason, NULL::DOUBLE AS latency_s, now() AS created_at "
        f"FROM new_rows f JOIN (SELECT __row AS __src_row, {job.light_exprs['turns']} AS __turns FROM src) x "
        "ON x.__src_row = f.__row",
        job.report.rows - job.report.duplicates,
    )


def _write_judgments(job: _FileJob) -> None:
    con = job.con
    job.resolve_targets()
    job.require("judge", "--set judge=NAME")
    lo, hi = job.options.scale if job.options.scale else (None, None)
    key = "coalesce(key, pair_key, '')" if "pair_key" in _columns(con, "stage") else "coalesce(key, '')"
    status = (
        "CASE WHEN score IS NULL THEN CASE WHEN raw_text IS NULL THEN 'error' ELSE 'unparsed' END "
        + (f"WHEN score < {lo} OR score > {hi} THEN 'error' " if lo is not None else "")
        + "ELSE 'ok' END"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE stage AS SELECT * EXCLUDE (key, rubric, rubric_version), {key} AS key, "
        "coalesce(rubric, 'overall') AS rubric, coalesce(rubric_version, '1') AS rubric_version, "
        f"{status} AS status FROM stage"
    )
    jid = ids.sql_hash("judgment", "target_id", "judge", "rubric", "rubric_version", "key")
    out_of_scale = con.execute("SELECT count(*) FROM stage WHERE status = 'error' AND score IS NOT NULL").fetchone()
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT * EXCLUDE (score), "
        f"CASE WHEN status = 'ok' THEN score END AS score, {jid} AS judgment_id FROM stage"
    )
    unique_sql = job.dedupe(
        "judgment_id", ["status", "score", "raw_text"], "judgments",
        "; several judgments of one answer by one judge need a key column (--map key=COLUMN)",
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE firsts AS {unique_sql}")
    rows = con.execute(
        "SELECT count(*) FILTER (status <> 'ok'), count(*) FILTER (status = 'unparsed') FROM firsts"
    ).fetchone()
    job.report.not_ok = int(rows[0]) if rows else 0
    if out_of_scale and out_of_scale[0]:
        job.report.notes.append(
            f"{out_of_scale[0]} score(s) outside the scale {lo:g}-{hi:g} (e.g. 0 = 'no answer') stored as not ok: "
            "status 'error', score NULL, review text kept"
        )
    if rows and rows[1]:
        job.report.notes.append(f"{rows[1]} judgment(s) without a score stored as status 'unparsed' (raw text kept)")
    job.insert(
        "judgments",
        "SELECT judgment_id, target_id, target_kind, prompt_id, judged_source AS source, judge, judge_version, "
        "rubric, rubric_version, 0 AS sample_index, raw_text, score, "
        f"status, 1 AS attempts, {_literal(lo)}::DOUBLE AS scale_min, {_literal(hi)}::DOUBLE AS scale_max, "
        "now() AS created_at FROM firsts",
        job.count("firsts"),
    )


def _write_feedback(job: _FileJob) -> None:
    con = job.con
    job.resolve_targets()
    job.require("score")
    job.require("annotator", "--set annotator=human")
    job.check_choice("split", SPLITS)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT * EXCLUDE (rubric, split), coalesce(rubric, 'overall') AS rubric, "
        "coalesce(split, 'train') AS split FROM stage"
    )
    _check_feedback_scale(job)
    keys = con.sql(
        "SELECT __row, __part, target_id, rubric, annotator, score, rationale FROM stage"
    ).to_arrow_table().to_pylist()
    fids = pa.table(
        {
            "__row": [k["__row"] for k in keys],
            "__part": [k["__part"] for k in keys],
            "feedback_id": [
                ids.feedback_id(k["target_id"], k["rubric"], k["annotator"], k["score"], k["rationale"] or "") for k in keys
            ],
        }
    )
    con.register("fids", fids)
    con.execute("CREATE OR REPLACE TEMP TABLE stage AS SELECT s.*, f.feedback_id FROM stage s JOIN fids f USING (__row, __part)")
    unique_sql = job.dedupe("feedback_id", ["split"], "feedback")
    con.execute(f"CREATE OR REPLACE TEMP TABLE firsts AS {unique_sql}")
    job.insert(
        "feedback",
        "SELECT feedback_id, target_id, target_kind, prompt_id, rubric, score, rationale, annotator, split, "
        "now() AS added_at FROM firsts",
        job.count("firsts"),
    )


def _check_feedback_scale(job: _FileJob) -> None:
    """A corrected score lies on its rubric's scale: the rubric file's when there is one
    (shipped or <catalog>/rubrics), else ``--scale``."""
    scales = job.options.rubric_scales
    job.con.register("rubric_scales", pa.table({
        "rubric": pa.array(list(scales), pa.string()),
        "lo": pa.array([lo for lo, _ in scales.values()], pa.float64()),
        "hi": pa.array([hi for _, hi in scales.values()], pa.float64()),
    }))
    default = job.options.scale
    lo, hi = (_literal(default[0]), _literal(default[1])) if default else ("NULL", "NULL")
    low, high = f"coalesce(r.lo, {lo})", f"coalesce(r.hi, {hi})"
    job.con.execute(
        "CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT s.__row, s.__part, s.score, "
        f"format('{{:g}}-{{:g}} of rubric ''{{}}''', {low}, {high}, s.rubric) AS __extra "
        f"FROM stage s LEFT JOIN rubric_scales r USING (rubric) WHERE s.score < {low} OR s.score > {high}"
    )
    job.con.unregister("rubric_scales")
    job.fail_if("true", "score", "{value:g} is outside the scale {extra}", table="stage_bad")


_WRITERS: dict[str, Callable[[_FileJob], None]] = {
    "prompts": _write_prompts,
    "answers": _write_answers,
    "responses": _write_responses,
    "judgments": _write_judgments,
    "feedback": _write_feedback,
}


# -- helpers ----------------------------------------------------------------------------


def _patch_python_ids(
    con: duckdb.DuckDBPyConnection,
    id_col: str,
    json_col: str,
    fn: Callable[[object], str] | None,
    answer_args: bool = False,
) -> None:
    """DuckDB's JSON writes control characters as upper-case \\u escapes where Python's
    json writes lower case; recompute the (rare) rows whose JSON has a \\u escape in Python
    so SQL-computed ids always equal :mod:`tso_data.ids`."""
    suspicious = f"regexp_matches(to_json({json_col}), '\\\\u[0-9A-Fa-f]{{4}}')"
    cols = "__row, __part, " + (f"prompt_id, source, {json_col}" if answer_args else json_col)
    rows = con.sql(f"SELECT {cols} FROM stage WHERE {suspicious}").to_arrow_table().to_pylist()
    if not rows:
        return
    if answer_args:
        new_ids = [ids.answer_id(r["prompt_id"], r["source"], r[json_col]) for r in rows]
    else:
        assert fn is not None
        new_ids = [fn(r[json_col]) for r in rows]
    patch = pa.table({"__row": [r["__row"] for r in rows], "__part": [r["__part"] for r in rows], "new_id": new_ids})
    con.register("id_patch", patch)
    con.execute(
        f"UPDATE stage SET {id_col} = id_patch.new_id FROM id_patch "
        "WHERE stage.__row = id_patch.__row AND stage.__part = id_patch.__part"
    )
    con.unregister("id_patch")


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]


def _literal(value: object) -> str:
    """An SQL literal for a constant.

    >>> _literal("it's")
    "'it''s'"
    >>> _literal(["a", "b"])
    "['a', 'b']"
    >>> _literal(None)
    'NULL'
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def field_help(kind: str) -> list[tuple[str, str, str]]:
    """(field, default columns, help) for ``kind``: what --help and the README show."""
    out = []
    for f in FIELDS[kind]:
        defaults = ", ".join(f.defaults) + (", turn_1, turn_2, ..." if f.is_list else "")
        out.append((f.name, defaults, f.help))
    return out


__all__ = ["KINDS", "FIELDS", "IngestOptions", "ingest_files", "ingest_file", "field_help", "json"]
