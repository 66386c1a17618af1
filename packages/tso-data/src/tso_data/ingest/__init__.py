"""Ingest prompts, human answers, model responses, judgments and feedback from JSONL,
Parquet, CSV or saved HF datasets into a catalog (see :func:`ingest_files`)."""

from tso_data.ingest.fields import FIELDS, KINDS
from tso_data.ingest.files import ingest_files
from tso_data.ingest.report import FileReport, IngestReport

__all__ = ["FIELDS", "KINDS", "FileReport", "IngestReport", "ingest_files"]
