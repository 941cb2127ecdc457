"""Output files written whole or not at all.

Every file slm-mux writes for the user (reports, plots, the demo's files) goes
through :func:`write_file`: the content goes to a temporary file beside the
target, which then replaces it. A full disk or any other write failure leaves
the target as it was (no empty or cut file) and raises an ``OSError`` naming
the target, so the command line says ``report.md: No space left on device``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` with what ``write`` writes to the binary stream it is given.

    The temporary file (``.NAME.PID.XXXX.tmp`` beside ``path``) gets the mode a new
    file would get; it is flushed to disk before it replaces ``path``, and removed
    when anything fails. An ``OSError`` raised on the way names ``path``.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as stream:
                write(stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
    except OSError as error:
        if error.filename == str(path):
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in UTF-8 (:func:`write_file`)."""
    write_file(path, lambda stream: stream.write(text.encode("utf-8")))
