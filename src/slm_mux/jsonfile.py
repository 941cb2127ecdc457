"""Reading JSON and JSON Lines files, with one-line errors that point at the file and line.

Every reader of user files (samples, the authors' layout, question files)
goes through here, so a missing file, a non-UTF-8 line or broken JSON reads
the same everywhere: ``file:line: invalid JSON (reason, column c)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from slm_mux.errors import FormatError, InputError

PathLike = str | os.PathLike[str]

_TOO_LONG = "a number too long to read"


def open_bytes(path: PathLike) -> BinaryIO:
    """``path`` opened for reading bytes; a missing or unreadable file is an :class:`InputError`."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None


def _decode(raw: bytes, path: PathLike, line: int | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(str(path), line, "not UTF-8 text") from None


def _parse(text: str, path: PathLike, line: int | None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = line if line is not None else error.lineno
        column = f", column {error.colno}" if line is not None else ""
        raise FormatError(str(path), where, f"invalid JSON ({error.msg}{column})") from None
    except ValueError:  # json refuses integers of more than 4300 digits
        raise FormatError(str(path), line, f"invalid JSON ({_TOO_LONG})") from None


def read_json(path: PathLike) -> Any:
    """The JSON document in ``path``."""
    with open_bytes(path) as stream:
        return _parse(_decode(stream.read(), path, None), path, None)


def read_json_lines(path: PathLike) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSON Lines file."""
    with open_bytes(path) as stream:
        for number, raw in enumerate(stream, start=1):
            text = _decode(raw, path, number)
            if text.strip():
                yield number, _parse(text, path, number)


def starts_with(path: PathLike, character: str) -> bool:
    """Whether the file's first non-blank character is ``character`` (e.g. ``[`` for an array)."""
    with open_bytes(path) as stream:
        while chunk := stream.read(4096):
            head = chunk.lstrip()
            if head:
                return head[:1] == character.encode()
    return False
