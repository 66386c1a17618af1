"""What an ingest did, per file: printed as a rich table or as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass
class FileReport:
    path: str
    kind: str
    format: str
    rows: int = 0  # records read (a pairwise review row counts once per judged answer)
    new: int = 0  # rows added to the catalog
    existing: int = 0  # already in the catalog with the same content
    duplicates: int = 0  # repeated inside the file with the same content
    not_ok: int = 0  # judgments stored without a score (status != 'ok')
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def no_op(self) -> bool:
        return self.new == 0


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)

    @property
    def new(self) -> int:
        return sum(f.new for f in self.files)

    def to_dict(self) -> dict[str, object]:
        return {"files": [asdict(f) for f in self.files], "new": self.new}

    def render(self, console: Console) -> None:
        table = Table(title="ingest", title_justify="left")
        for name in ("file", "kind", "format", "rows", "new", "existing", "dup", "not ok", "s"):
            left = name in ("file", "kind", "format")
            table.add_column(name, justify="left" if left else "right", no_wrap=name != "file",
                             overflow="fold" if name == "file" else "ellipsis")
        for f in self.files:
            table.add_row(
                Path(f.path).name, f.kind, f.format, f"{f.rows:,}", f"[green]{f.new:,}[/]" if f.new else "0",
                f"{f.existing:,}", f"{f.duplicates:,}", f"[yellow]{f.not_ok:,}[/]" if f.not_ok else "0",
                f"{f.seconds:.1f}",
            )
        console.print(table)
        for f in self.files:
            for note in f.notes:
                console.print(f"  [dim]{Path(f.path).name}:[/] {note}")
            if f.no_op and f.rows:
                console.print(f"  [dim]{Path(f.path).name}:[/] nothing new: every row is already in the catalog")
