"""How library code reports progress without printing.

Long runs (collection, comparison) tell a :class:`Progress` sink what happens: a phase
begins (``phase``), a row per model counts its work (``row`` then ``advance``), and a
status line may be noted (``note``). The library never prints; the command line renders
a sink with Rich on stderr (:mod:`slm_mux.cli.progress`), tests record one
(:class:`RecordedProgress`), and callers that want nothing pass :data:`SILENT`.

Warnings (a model whose replies are empty, an ignored setting) go through the
``slm_mux`` :mod:`logging` logger, which the command line prints as
``slm-mux: warning: …`` on stderr.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol


class ProgressRow(Protocol):
    """One row of a phase: a model's samples or questions done out of a total."""

    def advance(self, done: int = 0, *, tokens: int = 0, errors: int = 0) -> None:
        """Count ``done`` more units, ``tokens`` more tokens and ``errors`` more failures."""

    def detail(self, text: str) -> None:
        """Replace the row's free-form detail (per-replica counters, say)."""


class Progress(Protocol):
    """Where a long run reports what it does."""

    def phase(self, title: str) -> AbstractContextManager[None]:
        """A phase of work (``collecting test (gsm8k): 100 questions``); rows live in it."""

    def row(self, name: str, *, total: int, done: int = 0) -> ProgressRow:
        """A new row of the current phase, ``done`` of ``total`` already done."""

    def note(self, text: str) -> None:
        """A one-line status message."""


class _SilentRow:
    def advance(self, done: int = 0, *, tokens: int = 0, errors: int = 0) -> None:
        return None

    def detail(self, text: str) -> None:
        return None


class _Silent:
    def phase(self, title: str) -> AbstractContextManager[None]:
        return nullcontext()

    def row(self, name: str, *, total: int, done: int = 0) -> ProgressRow:
        return _SilentRow()

    def note(self, text: str) -> None:
        return None


SILENT: Progress = _Silent()
"""A sink that shows nothing: the default of every library function."""


@dataclass
class RecordedRow:
    """A row of :class:`RecordedProgress`, with its running totals."""

    name: str
    total: int
    done: int
    tokens: int = 0
    errors: int = 0
    details: list[str] = field(default_factory=list)

    def advance(self, done: int = 0, *, tokens: int = 0, errors: int = 0) -> None:
        self.done += done
        self.tokens += tokens
        self.errors += errors

    def detail(self, text: str) -> None:
        self.details.append(text)


@dataclass
class RecordedProgress:
    """A sink that keeps everything it is told, in order (for tests and embedding)."""

    phases: list[str] = field(default_factory=list)
    rows: list[RecordedRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def phase(self, title: str) -> AbstractContextManager[None]:
        self.phases.append(title)
        return nullcontext()

    def row(self, name: str, *, total: int, done: int = 0) -> ProgressRow:
        made = RecordedRow(name, total, done)
        self.rows.append(made)
        return made

    def note(self, text: str) -> None:
        self.notes.append(text)
