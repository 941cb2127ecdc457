"""The JSON Lines records that are not samples: questions and compare records.

A line with a ``"kind"`` is one of these (a line without is a sample,
:mod:`slm_mux.formats`)::

    {"kind": "question", "task": "gsm8k", "split": "test", "question_id": "q1",
     "text": "What is 2 + 2?", "reference": "4"}
    {"kind": "call", "method": "debate", "config_hash": "...", "task": "gsm8k",
     "split": "test", "question_id": "q1", "step": "round1", "model": "m", "n": 1,
     "messages": [{"role": "user", "content": "..."}], "replies": ["..."],
     "prompt_tokens": 12 | null, "completion_tokens": 30 | null, "latency_s": 0.4,
     "requests": 1, "created_at": "..."}
    {"kind": "method_run", "method": "debate", "config_hash": "...", "task": "gsm8k",
     "split": "test", "questions_hash": "...", "wall_s": 12.5, "result": {...} | null,
     "updated_at": "..."}

``question`` lines carry the question texts a report shows; ``call`` and
``method_run`` lines carry what ``slm-mux compare`` recorded (the ``calls`` and
``method_runs`` tables), so ``export`` then ``import`` moves a whole store. Every
key is required but a question's ``task`` (default: the import's task); an
unknown key is an error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from slm_mux.errors import FormatError
from slm_mux.sample import SPLITS
from slm_mux.store import RECORD_TABLES, Staging
from slm_mux.tasks import task_names
from slm_mux.tasks.data import is_unicode
from slm_mux.tokens import is_count

_Check = tuple[Callable[[Any], bool], str]


def _name(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _count(least: int) -> Callable[[Any], bool]:
    return lambda value: is_count(value, least)


def _seconds(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 <= value <= sys.float_info.max
    )


def _or_null(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict) and all(isinstance(v, str) for v in m.values()) for m in value
    )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_NAME: _Check = (_name, "a non-empty string")
_STRING: _Check = (lambda value: isinstance(value, str), "a string")
_SPLIT: _Check = (lambda value: value in SPLITS, " or ".join(repr(s) for s in SPLITS))
_TOKENS: _Check = (_or_null(_count(0)), "an integer from 0 to 2**63-1 or null")
_SECONDS: _Check = (_seconds, "a finite non-negative number")

QUESTION_KEYS: dict[str, _Check] = {
    "task": _NAME,
    "split": _SPLIT,
    "question_id": _NAME,
    "text": _STRING,
    "reference": _STRING,
}
_CALL_KEYS: dict[str, _Check] = {
    "method": _NAME,
    "config_hash": _NAME,
    "task": _NAME,
    "split": _SPLIT,
    "question_id": _NAME,
    "step": _NAME,
    "model": _NAME,
    "n": (_count(1), "an integer from 1"),
    "messages": (_messages, "a list of objects of strings"),
    "replies": (_strings, "a list of strings"),
    "prompt_tokens": _TOKENS,
    "completion_tokens": _TOKENS,
    "latency_s": _SECONDS,
    "requests": (_count(1), "an integer from 1"),
    "created_at": _STRING,
}
_RUN_KEYS: dict[str, _Check] = {
    "method": _NAME,
    "config_hash": _NAME,
    "task": _NAME,
    "split": _SPLIT,
    "questions_hash": _NAME,
    "wall_s": _SECONDS,
    "result": (_or_null(lambda value: isinstance(value, dict)), "an object or null"),
    "updated_at": _STRING,
}
_TABLES = {table.kind: table for table in RECORD_TABLES}
KEYS = {"question": QUESTION_KEYS, "call": _CALL_KEYS, "method_run": _RUN_KEYS}
"""The keys of each kind of record, with their checks (a table's keys are its columns)."""


def checked(record: dict[str, Any], path: str, lineno: int, default_task: str) -> dict[str, Any]:
    """``record`` (a line with a ``kind``) with its kind's keys checked; raises
    :class:`FormatError` naming the first fault. A question without a task gets
    ``default_task``."""
    kind = record["kind"]
    if kind not in KEYS:
        expected = ", ".join(repr(k) for k in KEYS)
        raise FormatError(path, lineno, f"'kind' must be {expected}, got {kind!r}")
    keys = KEYS[kind]
    values = {key: value for key, value in record.items() if key != "kind"}
    if kind == "question":
        values.setdefault("task", default_task)
    unknown = [key for key in values if key not in keys]
    if unknown:
        raise FormatError(path, lineno, f"unknown key {unknown[0]!r} in a {kind} record")
    missing = [key for key in keys if key not in values]
    if missing:
        raise FormatError(path, lineno, f"missing key {missing[0]!r} in a {kind} record")
    if kind == "question" and values["task"] not in task_names():
        raise FormatError(path, lineno, f"unknown task {values['task']!r}")
    for key, value in values.items():
        check, expected = keys[key]
        if not check(value):
            raise FormatError(path, lineno, f"{key!r} must be {expected}, got {value!r:.40}")
        if isinstance(value, str) and not (value.isascii() or is_unicode(value)):
            raise FormatError(path, lineno, f"{key!r} is not valid Unicode (a lone surrogate)")
    return {"kind": kind, **values}


class StagedRecords:
    """The question and compare records of one file, staged after its samples."""

    def __init__(self) -> None:
        self._questions: dict[tuple[str, str], list[tuple[str, str, str, int]]] = {}
        self._rows: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in _TABLES}

    def add(self, record: dict[str, Any], origin: int) -> None:
        """Keep one checked record (see :func:`checked`) from ``origin``."""
        kind = record["kind"]
        if kind == "question":
            rows = self._questions.setdefault((record["task"], record["split"]), [])
            rows.append((record["question_id"], record["text"], record["reference"], origin))
        else:
            self._rows[kind].append((*_TABLES[kind].to_row(record), origin))

    def stage(self, staging: Staging) -> None:
        """Stage every record kept (questions first, then compare records)."""
        for (task, split), rows in self._questions.items():
            staging.add_questions(task, split, rows)
        for kind, table in _TABLES.items():
            if self._rows[kind]:
                staging.add_records(table, self._rows[kind])
