"""The terminal's progress sink and the library's warnings, rendered into memory."""

from __future__ import annotations

import io
import logging
import re
from types import SimpleNamespace
from typing import cast

import pytest
from rich.console import Console
from rich.progress import Task as BarTask

from slm_mux.cli.output import LogLines, printed_library_warnings
from slm_mux.cli.progress import RateColumn, TerminalProgress, terminal_progress
from slm_mux.progress import Progress


def _console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    return Console(file=stream, force_terminal=terminal, width=160), stream


def _plain(text: str) -> str:
    """``text`` without terminal control sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def _run(progress: Progress) -> None:
    with progress.phase("collecting test (arith): 10 questions"):
        row = progress.row("tiny-a", total=10, done=3)
        row.advance(4, tokens=1234, errors=1)
        row.detail("req 4 3 err 1 0 cool 0 0")
        progress.note("halfway")


def test_on_a_terminal_each_row_shows_its_columns() -> None:
    console, stream = _console(terminal=True)
    _run(TerminalProgress(console=console))
    shown = _plain(stream.getvalue())
    assert "collecting test (arith): 10 questions\n" in shown
    assert "halfway\n" in shown
    final = [line for line in shown.splitlines() if "tiny-a" in line][-1]
    assert "7/10" in final
    assert "1234 tok 1 err" in final
    assert "/s" in final  # this run's rate: 4 done since the row began
    assert final.rstrip().endswith("req 4 3 err 1 0 cool 0 0")


def test_off_a_terminal_only_titles_and_notes_are_printed() -> None:
    console, stream = _console(terminal=False)
    progress = TerminalProgress(console=console)
    assert not progress.visible
    _run(progress)
    assert stream.getvalue() == "collecting test (arith): 10 questions\nhalfway\n"


def test_quiet_hides_the_bars_on_a_terminal_too() -> None:
    console, stream = _console(terminal=True)
    progress = TerminalProgress(show=False, console=console)
    assert not progress.visible
    _run(progress)
    assert _plain(stream.getvalue()) == "collecting test (arith): 10 questions\nhalfway\n"


def test_a_long_note_is_one_line_with_its_brackets_intact() -> None:
    console, stream = _console(terminal=False)
    text = "model [bold]x[/bold] " + "word " * 60
    TerminalProgress(console=console).note(text)
    assert stream.getvalue() == text + "\n"


def test_the_command_sink_follows_quiet() -> None:
    assert terminal_progress(quiet=True).visible is False


def test_library_warnings_print_as_one_slm_mux_warning_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("slm_mux")
    before = list(logger.handlers)
    with printed_library_warnings(), printed_library_warnings():  # nested: one handler
        assert sum(isinstance(h, LogLines) for h in logger.handlers) == 1
        logging.getLogger("slm_mux.collect").warning("model %r replied\nnothing", "a")
        logging.getLogger("slm_mux.collect").info("not shown")
        assert capsys.readouterr().err == "slm-mux: warning: model 'a' replied nothing\n"
    assert logger.handlers == before  # gone once the command ends
    logging.getLogger("slm_mux.collect").warning("after the command")
    assert "slm-mux" not in capsys.readouterr().err


def test_the_rate_counts_only_this_runs_units() -> None:
    row = SimpleNamespace(
        fields={"ran": 50, "tokens": 1234, "errors": 1},
        elapsed=10.0,
        completed=950,  # 900 were already done: they must not count
    )
    text = RateColumn().render(cast(BarTask, row)).plain
    assert text.split() == ["5.0/s", "1234", "tok", "1", "err"]
    idle = SimpleNamespace(fields={"ran": 0, "tokens": 0, "errors": 0}, elapsed=3.0)
    assert RateColumn().render(cast(BarTask, idle)).plain.split()[0] == "-/s"
