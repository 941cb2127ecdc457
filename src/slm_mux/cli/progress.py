"""The terminal's :class:`~slm_mux.progress.Progress` sink: Rich progress bars on stderr.

Each phase prints its title as a line, then shows one bar per row with the
columns ``collect`` has always shown: name, bar, done of total, the rate of
this run's units, tokens, errors, elapsed time and the row's detail (per-replica
counters). The bars are off when stderr is not a terminal or with ``--quiet``;
titles and notes are printed either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as Bars
from rich.progress import Task as BarTask
from rich.text import Text

from slm_mux.progress import ProgressRow


class RateColumn(ProgressColumn):
    """Units per second done by this run (not those done before it), tokens and errors."""

    def render(self, task: BarTask) -> Text:
        ran: int = task.fields["ran"]
        elapsed = task.elapsed
        rate = f"{ran / elapsed:5.1f}/s" if elapsed and ran else "    -/s"
        return Text(f"{rate} {task.fields['tokens']:>7} tok {task.fields['errors']} err")


class DetailColumn(ProgressColumn):
    """The row's free-form detail (``req 40 38 41 err 0 3 0 cool 0 1 0``), often empty."""

    def render(self, task: BarTask) -> Text:
        return Text(task.fields["detail"])


class _BarRow:
    """A row of :class:`TerminalProgress`: one task of its phase's bars."""

    def __init__(self, bars: Bars, task: TaskID) -> None:
        self._bars = bars
        self._task = task
        self._ran = self._tokens = self._errors = 0

    def advance(self, done: int = 0, *, tokens: int = 0, errors: int = 0) -> None:
        self._ran += done
        self._tokens += tokens
        self._errors += errors
        self._bars.update(
            self._task, advance=done, ran=self._ran, tokens=self._tokens, errors=self._errors
        )

    def detail(self, text: str) -> None:
        self._bars.update(self._task, detail=text)


class TerminalProgress:
    """A :class:`~slm_mux.progress.Progress` drawn with Rich on ``console`` (default stderr).

    ``show``: ``None`` shows bars when the console is a terminal, ``False`` never.
    """

    def __init__(self, *, show: bool | None = None, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.visible = self.console.is_terminal and show is not False
        self._bars = self._new_bars()

    def _new_bars(self) -> Bars:
        return Bars(
            TextColumn("{task.description:<16}"),
            BarColumn(bar_width=12),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            DetailColumn(),
            console=self.console,
            disable=not self.visible,
        )

    def phase(self, title: str) -> AbstractContextManager[None]:
        return self._phase(title)

    @contextmanager
    def _phase(self, title: str) -> Iterator[None]:
        self.note(title)
        self._bars = self._new_bars()
        with self._bars:
            yield

    def row(self, name: str, *, total: int, done: int = 0) -> ProgressRow:
        task = self._bars.add_task(
            name, total=total, completed=done, ran=0, tokens=0, errors=0, detail=""
        )
        return _BarRow(self._bars, task)

    def note(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)


def terminal_progress(quiet: bool) -> TerminalProgress:
    """The sink of a command: bars on a terminal's stderr unless ``--quiet``."""
    return TerminalProgress(show=False if quiet else None)
