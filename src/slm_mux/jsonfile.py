"""Reading JSON and JSON Lines files, with one-line errors that point at the file and line.

Every reader of user files (samples, the authors' layout, question files)
goes through here, so a missing file, a non-UTF-8 line or broken JSON (nested
too deeply, too) reads the same everywhere: ``file:line: invalid JSON (reason, column c)``.

JSON Lines are parsed by ``orjson`` when it is installed; a line it refuses
is read again by the standard library, so values and errors are the same
either way, only slower without it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from json.scanner import c_make_scanner  # type: ignore[attr-defined]
from typing import Any, BinaryIO

from slm_mux.errors import FormatError, InputError

PathLike = str | os.PathLike[str]

_TOO_LONG = "a number too long to read"
TOO_DEEP = "nested too deeply"
"""Why a JSON value nested deeper than Python's recursion allows is refused."""

_fast_loads: Callable[[bytes], Any] | None
try:
    import orjson

    _fast_loads = orjson.loads
except ImportError:
    _fast_loads = None


def open_bytes(path: PathLike) -> BinaryIO:
    """``path`` opened for reading bytes; a missing or unreadable file is an :class:`InputError`."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None


def _decode(raw: bytes, path: PathLike, first: int) -> str:
    """``raw`` as UTF-8; a bad byte is a :class:`FormatError` naming its line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first + raw.count(b"\n", 0, error.start)
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
    except RecursionError:
        raise FormatError(str(path), line, f"invalid JSON ({TOO_DEEP})") from None


def read_json(path: PathLike) -> Any:
    """The JSON document in ``path``."""
    with open_bytes(path) as stream:
        return _parse(_decode(stream.read(), path, 1), path, None)


_BLOCK = 1 << 24
"""Bytes read at a time from a JSON Lines file (cut at the last newline)."""

_scan = c_make_scanner(json.JSONDecoder())


def _lines_of_block(text: str, path: PathLike, first: int) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of the non-blank lines of ``text``, numbered from ``first``.

    A line that is one JSON object and nothing else is parsed in place by the
    C scanner; every other line goes through :func:`_parse`, which names the error.
    """
    end_of_text = len(text)
    position, number = 0, first
    while position < end_of_text:
        stop = text.find("\n", position)
        if stop < 0:
            stop = end_of_text
        if text[position] == "{":
            try:
                value, end = _scan(text, position)
            except (StopIteration, ValueError, RecursionError):
                end = -1  # read again by _parse, which names the fault
            if end == stop:  # the object is the whole line
                yield number, value
                position, number = stop + 1, number + 1
                continue
        line = text[position:stop]
        if line.strip():
            yield number, _parse(line, path, number)
        position, number = stop + 1, number + 1


def _lines_of_bytes(block: bytes, path: PathLike, first: int) -> Iterator[tuple[int, Any]]:
    """:func:`_lines_of_block` of ``block`` decoded, each line parsed by ``orjson`` first."""
    if _fast_loads is None:
        yield from _lines_of_block(_decode(block, path, first), path, first)
        return
    _decode(block, path, first)  # the first bad byte is named before any bad line, as without
    for number, line in enumerate(block.split(b"\n"), first):
        try:
            value = _fast_loads(line)
        except ValueError:  # blank, or refused: the standard library reads it or names the fault
            yield from _lines_of_block(line.decode("utf-8"), path, number)
            continue
        yield number, value


def read_json_lines(path: PathLike) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSON Lines file.

    The file is read in blocks, so memory does not grow with its size.
    """
    with open_bytes(path) as stream:
        first, carry = 1, b""
        while block := stream.read(_BLOCK):
            block = carry + block
            cut = block.rfind(b"\n") + 1
            block, carry = block[:cut], block[cut:]
            yield from _lines_of_bytes(block, path, first)
            first += block.count(b"\n")
        if carry:
            yield from _lines_of_bytes(carry, path, first)


def starts_with(path: PathLike, character: str) -> bool:
    """Whether the file's first non-blank character is ``character`` (e.g. ``[`` for an array)."""
    with open_bytes(path) as stream:
        while chunk := stream.read(4096):
            head = chunk.lstrip()
            if head:
                return head[:1] == character.encode()
    return False
