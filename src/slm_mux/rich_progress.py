"""A Rich renderer of the :class:`~slm_mux.progress.Progress` sink, for the command line.

A bridge: the library reports through :mod:`slm_mux.progress` and never
imports Rich; this module draws its rows as progress bars on stderr and prints
each phase's title to a log stream. It moves into the command line's package
(``slm_mux.cli.progress``) once that exists; :func:`progress_display` serves
``compare``'s own rows until ``compare`` reports through a sink too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Task as ProgressTask
from rich.text import Text

from slm_mux.progress import SILENT, ProgressRow


class RateColumn(ProgressColumn):
    """Units per second done by this run, tokens and errors of one row.

    The rate counts only this run's units (the ``collected`` field), not the
    ones found already done, over the row's elapsed time.
    """

    def render(self, task: ProgressTask) -> Text:
        collected: int = task.fields["collected"]
        elapsed = task.elapsed
        rate = f"{collected / elapsed:5.1f}/s" if elapsed and collected else "    -/s"
        return Text(f"{rate} {task.fields['tokens']:>7} tok {task.fields['errors']} err")


class ReplicaColumn(ProgressColumn):
    """A row's detail: a replicated model's per-replica counters (empty for one server)."""

    def render(self, task: ProgressTask) -> Text:
        return Text(task.fields.get("replicas", ""))


def progress_display(show: bool | None = None, console: Console | None = None) -> Progress:
    """Progress bars on stderr; off when ``show`` is false or stderr is not a terminal."""
    console = console or Console(file=sys.stderr)
    visible = console.is_terminal if show is None else show and console.is_terminal
    return Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(bar_width=12),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        ReplicaColumn(),
        console=console,
        disable=not visible,
    )


class _RichRow:
    """One row of a :class:`RichProgress` phase."""

    def __init__(self, display: Progress, row: TaskID) -> None:
        self._display, self._row = display, row
        self._collected = self._tokens = self._errors = 0

    def advance(self, done: int = 0, *, tokens: int = 0, errors: int = 0) -> None:
        self._collected += done
        self._tokens += tokens
        self._errors += errors
        self._display.update(
            self._row,
            advance=done,
            collected=self._collected,
            tokens=self._tokens,
            errors=self._errors,
        )

    def detail(self, text: str) -> None:
        self._display.update(self._row, replicas=text)


class RichProgress:
    """Phases printed to ``log`` (when given), rows drawn as Rich bars (see
    :func:`progress_display` for ``show``)."""

    def __init__(self, show: bool | None = None, log: TextIO | None = None) -> None:
        self._show, self._log = show, log
        self._display: Progress | None = None

    @contextmanager
    def _phase(self, title: str) -> Iterator[None]:
        if self._log is not None:
            print(title, file=self._log)
        with progress_display(self._show) as display:
            self._display = display
            try:
                yield
            finally:
                self._display = None

    def phase(self, title: str) -> AbstractContextManager[None]:
        return self._phase(title)

    def row(self, name: str, *, total: int, done: int = 0) -> ProgressRow:
        if self._display is None:
            return SILENT.row(name, total=total, done=done)
        row = self._display.add_task(
            name, total=total, completed=done, collected=0, tokens=0, errors=0, replicas=""
        )
        return _RichRow(self._display, row)

    def note(self, text: str) -> None:
        if self._log is not None:
            print(text, file=self._log)
