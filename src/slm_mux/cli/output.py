"""What the commands print besides their results: JSON, warnings, notes, library log records.

Results go to stdout; everything else is one ``slm-mux: LEVEL: ...`` line on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def print_json(payload: dict[str, Any]) -> None:
    """``payload`` as indented JSON on stdout."""
    json.dump(payload, sys.stdout, indent=2)
    sys.stdout.write("\n")


def warn(message: str) -> None:
    """One ``slm-mux: warning:`` line on stderr."""
    print(f"slm-mux: warning: {message}", file=sys.stderr)


def note(message: str) -> None:
    """One ``slm-mux: note:`` line on stderr: what a command chose for the user."""
    print(f"slm-mux: note: {message}", file=sys.stderr)


class LogLines(logging.Handler):
    """Prints each record of the ``slm_mux`` logger as ``slm-mux: warning: ...`` (its
    level in lower case) on the stderr of the moment, so captured streams see it too."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(record.getMessage().splitlines())
            print(f"slm-mux: {record.levelname.lower()}: {message}", file=sys.stderr)
        except Exception:  # logging's contract: a handler never raises
            self.handleError(record)


@contextmanager
def printed_library_warnings() -> Iterator[None]:
    """While a command runs, print the ``slm_mux`` logger's warnings and errors on stderr
    (one handler, however deeply commands nest; removed again when the outermost ends)."""
    logger = logging.getLogger("slm_mux")
    if any(isinstance(handler, LogLines) for handler in logger.handlers):
        yield
        return
    handler = LogLines(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
