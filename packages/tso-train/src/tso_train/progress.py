"""A rich progress bar with a live line of metrics (rank 0 only)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tso_train.engine import rank
from tso_train.metrics import live_line


class RichProgress:
    def __init__(self, description: str = "fit", console: Console | None = None) -> None:
        self.enabled = rank() == 0
        self.description = description
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
            console=console or Console(stderr=True), transient=False,
        )
        self.task = None

    def start(self, total: int, done: int = 0) -> None:
        if not self.enabled:
            return
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=total, completed=done, metrics="")

    def update(self, row: dict) -> None:
        if self.enabled and self.task is not None:
            desc = f"{self.description} part {row['part']}" if "part" in row else self.description
            self.progress.update(self.task, advance=1, description=desc, metrics=live_line(row))

    def stop(self) -> None:
        if self.enabled and self.task is not None:
            self.progress.stop()
