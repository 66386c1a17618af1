"""A rich progress bar with a live line of metrics under it (rank 0 only).

`fit` and `sft` report to an optional progress sink: ``start(total, done)``, ``phase(text)``
(what runs now, e.g. a part's reference pass), ``note(text)`` (a line kept above the bar),
``update(row)`` after each optimiser step and ``stop()``.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from tso_train.engine import rank
from tso_train.metrics import live_line


class _ProgressWithMetrics(Progress):
    metrics_line: str = ""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        if self.metrics_line:
            yield Text(self.metrics_line, style="dim")


class RichProgress:
    def __init__(self, description: str = "fit", console: Console | None = None) -> None:
        self.enabled = rank() == 0
        self.description = description
        self.progress = _ProgressWithMetrics(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=console or Console(stderr=True),
        )
        self.task = None

    def start(self, total: int, done: int = 0) -> None:
        if not self.enabled:
            return
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=total, completed=done)

    def phase(self, text: str) -> None:
        if self.enabled and self.task is not None:
            self.progress.update(self.task, description=f"{self.description} {text}")

    def note(self, text: str) -> None:
        if self.enabled:
            self.progress.console.print(text, highlight=False, markup=False)

    def update(self, row: dict) -> None:
        if self.enabled and self.task is not None:
            self.progress.metrics_line = live_line(row)
            self.progress.update(self.task, advance=1)

    def stop(self) -> None:
        if self.enabled and self.task is not None:
            self.progress.stop()
            self.task = None


class NullProgress:
    """The sink of a library call that shows nothing."""

    def start(self, total: int, done: int = 0) -> None: ...

    def phase(self, text: str) -> None: ...

    def note(self, text: str) -> None: ...

    def update(self, row: dict) -> None: ...

    def stop(self) -> None: ...
