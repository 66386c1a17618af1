"""Load files into the catalog: one transaction per file, all checks before any write.

The work is column-wise SQL inside DuckDB (ids with :func:`tso_data.ids.sql_hash`, an
anti-join on the key), so a million-row Parquet file costs no per-row Python. Every check
names the file, the line (JSONL/CSV) or row (Parquet/HF) and the field; any failure rolls
the file's transaction back, so the catalog is exactly as it was.

A file is staged and checked beside readers, holding only the shared read lock; the write
lock is taken for the final INSERTs alone (:mod:`tso_data.staged_write`). The parts:
:mod:`~tso_data.ingest.readers` (the file), :mod:`~tso_data.ingest.staging` (its rows),
:mod:`~tso_data.ingest.references` and :mod:`~tso_data.ingest.identity` (checks against the
catalog), :mod:`~tso_data.ingest.kinds` (per kind). See docs/design.md, 3. The catalog.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.ingest.fields import DEFAULT_SCALE, FIELDS, KINDS
from tso_data.ingest.kinds import PREPARE_BY_KIND
from tso_data.ingest.mapping import Binding, resolve
from tso_data.ingest.options import IngestOptions
from tso_data.ingest.readers import Source, open_source
from tso_data.ingest.report import FileReport, IngestReport
from tso_data.ingest.staging import StagedFile
from tso_data.staged_write import StagedWrite, write_in_chunks

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
        job = stage_and_check(staged.con, kind, path, source, bindings, options, report)
        if progress is not None:
            progress("write", None, None)

        def recheck() -> StagedFile:  # another writer committed meanwhile: check again (write_in_chunks)
            fresh = FileReport(str(path), kind, source.format, notes=list(source.notes))
            return stage_and_check(staged.con, kind, path, source, bindings, options, fresh)

        job, new = write_in_chunks(staged, job, recheck)
    job.report.new = new
    job.report.existing = job.report.rows - job.report.duplicates - new
    job.report.seconds = time.monotonic() - started
    return job.report


def stage_and_check(
    con: duckdb.DuckDBPyConnection, kind: str, path: Path, source: Source, bindings: dict[str, Binding],
    options: IngestOptions, report: FileReport,
) -> StagedFile:
    """Stage the file and run every check of its kind; :func:`write_in_chunks` then inserts
    the job's final rows."""
    job = StagedFile(con, path, source, dict(bindings), report, options)
    job.stage()
    PREPARE_BY_KIND[kind](job)
    return job
