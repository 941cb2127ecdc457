"""Question files: JSON (a list of objects) or JSONL, in each built-in task's own layout.

=========  ==============================================================
task       fields (id defaults to the record's index, counted from 0)
=========  ==============================================================
math       ``problem``, ``answer`` (else the last ``\\boxed{}`` of
           ``solution``), id from ``unique_id``
gsm8k      ``question``, ``answer`` ending in ``#### N`` (or a bare number),
           id from ``id``
gpqa       ``question``, ``choices`` (``"A text"``, ...), ``answer`` letter;
           or the original ``Question``, ``Correct Answer``,
           ``Incorrect Answer 1..3``; id from ``id`` or ``Record ID``
others     ``question``, ``reference`` (or ``answer``), id from ``id``
=========  ==============================================================

Every error names the file and the line (JSONL) or item (JSON) and the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_mux.errors import FormatError, InputError
from slm_mux.tasks import get_task
from slm_mux.tasks.base import Question
from slm_mux.tasks.gpqa import LETTERS, GpqaTask, shuffled_question, strip_letter_prefixes
from slm_mux.tasks.gsm8k import Gsm8kTask, plain_decimal
from slm_mux.tasks.math import last_boxed


@dataclass(frozen=True)
class Record:
    """One object of a question file and where it was: its index and, in JSONL, its line."""

    path: str
    index: int
    line: int | None
    fields: dict[str, Any]

    def error(self, reason: str) -> FormatError:
        """A :class:`FormatError` that points at this record."""
        return FormatError(
            self.path,
            self.line,
            reason if self.line is not None else f"item {self.index}: {reason}",
        )

    def text(self, key: str) -> str:
        """The non-empty string under ``key``."""
        value = self.fields.get(key)
        if key not in self.fields:
            raise self.error(f"missing key {key!r}")
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{key!r} must be a non-empty string")
        return value

    def scalar(self, key: str) -> str:
        """The non-empty string or number under ``key``, as a string."""
        value = self.fields.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return self.text(key).strip()

    def text_list(self, key: str) -> list[str]:
        """The list of non-empty strings under ``key``."""
        value = self.fields.get(key)
        if key not in self.fields:
            raise self.error(f"missing key {key!r}")
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(f"{key!r} must be a list of non-empty strings")
        return value


def read_records(path: str | Path) -> list[Record]:
    """The objects of a JSON array or JSONL file (blank lines skipped)."""
    name = str(path)
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{name}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise FormatError(name, None, "not UTF-8 text") from None
    located: list[tuple[int | None, object]] = []
    if content.lstrip().startswith("["):
        try:
            items = json.loads(content)
        except json.JSONDecodeError as error:
            raise FormatError(name, error.lineno, f"invalid JSON: {error.msg}") from None
        located = [(None, item) for item in items]
    else:
        for number, line in enumerate(content.splitlines(), start=1):
            if line.strip():
                try:
                    located.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise FormatError(name, number, f"invalid JSON: {error.msg}") from None
    records = []
    for index, (line_number, item) in enumerate(located):
        if not isinstance(item, dict):
            raise Record(name, index, line_number, {}).error("expected a JSON object")
        records.append(Record(name, index, line_number, item))
    if not records:
        raise FormatError(name, None, "no questions")
    return records


def unique_ids(questions: list[Question], records: list[Record]) -> list[Question]:
    """``questions`` (one per record), after checking that no id repeats."""
    first: dict[str, Record] = {}
    for question, record in zip(questions, records, strict=True):
        if question.id in first:
            seen = first[question.id]
            where = f"line {seen.line}" if seen.line else f"item {seen.index}"
            raise record.error(f"duplicate id {question.id!r} (first at {where})")
        first[question.id] = record
    return questions


def _record_id(record: Record, *keys: str) -> str:
    for key in keys:
        if key in record.fields:
            return record.scalar(key)
    return str(record.index)


def _math(record: Record) -> Question:
    if "answer" in record.fields or "solution" not in record.fields:
        reference = record.scalar("answer")
    else:
        boxed = last_boxed(record.text("solution"))
        if boxed is None:
            raise record.error("missing key 'answer' and no \\boxed{} in 'solution'")
        reference = boxed
    return Question(_record_id(record, "unique_id"), record.text("problem"), reference)


def _gsm8k(record: Record) -> Question:
    answer = record.scalar("answer")
    reference = Gsm8kTask().canonical(answer.rpartition("####")[2])
    if plain_decimal(reference) is None:
        raise record.error("'answer' has no final '#### <number>' line")
    return Question(_record_id(record, "id"), record.text("question"), reference)


def _gpqa(record: Record) -> Question:
    question_id = _record_id(record, "id", "Record ID")
    if "Question" in record.fields:
        keys = ["Correct Answer"] + [f"Incorrect Answer {i}" for i in range(1, len(LETTERS))]
        options = [record.text(key).strip() for key in keys]
        return shuffled_question(question_id, record.text("Question").strip(), options, 0)
    options = strip_letter_prefixes(record.text_list("choices"))
    if not 2 <= len(options) <= len(LETTERS):
        raise record.error(f"'choices' must hold 2 to {len(LETTERS)} options")
    letter = GpqaTask().canonical(record.scalar("answer"))
    if letter not in LETTERS[: len(options)]:
        raise record.error(f"'answer' must be a letter A-{LETTERS[len(options) - 1]}")
    correct = LETTERS.index(letter)
    return shuffled_question(question_id, record.text("question").strip(), options, correct)


def _generic(record: Record) -> Question:
    key = "reference" if "reference" in record.fields else "answer"
    return Question(_record_id(record, "id"), record.text("question"), record.scalar(key))


_LAYOUTS: dict[str, Callable[[Record], Question]] = {
    "math": _math,
    "gsm8k": _gsm8k,
    "gpqa": _gpqa,
}


def load_questions(task_name: str, path: str | Path) -> list[Question]:
    """The questions of ``path`` in the layout of task ``task_name`` (see the module doc)."""
    get_task(task_name)  # an unknown name raises InputError
    convert = _LAYOUTS.get(task_name, _generic)
    records = read_records(path)
    return unique_ids([convert(record) for record in records], records)
