"""What the commands print besides their results: JSON, warnings, notes, library log records.

Results go to stdout; everything else is one ``slm-mux: LEVEL: ...`` line on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
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


def print_library_warnings() -> None:
    """Route the ``slm_mux`` logger's warnings and errors to stderr (once per process)."""
    logger = logging.getLogger("slm_mux")
    if not any(isinstance(handler, LogLines) for handler in logger.handlers):
        logger.addHandler(LogLines(logging.WARNING))
