"""What the user told ``tso-data ingest`` about a file beyond its columns."""

from __future__ import annotations

from dataclasses import dataclass, field

from tso_data.ingest.fields import DEFAULT_SCALE


@dataclass
class IngestOptions:
    model: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    prompt_source: str | None = None  # restrict external-id lookups to prompts of this source
    scale: tuple[float, float] | None = DEFAULT_SCALE  # judgments outside it are not ok
    hf_split: str | None = None
    rubric_scales: dict[str, tuple[float, float]] = field(default_factory=dict)  # feedback: per rubric file

