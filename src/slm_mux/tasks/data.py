"""Question files: JSON (a list of objects) or JSONL, in each built-in task's own layout.

=========  ==============================================================
task       fields
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

A record without an id gets :func:`~slm_mux.tasks.base.question_hash` of its
question text (for gpqa, the question and its options, one per line), so the id
names the question, never its position in the file. Two such records with the
same text are an error: give them ids or drop the repeat.

Every error names the file and the line (JSONL) or item (JSON) and the key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_mux.errors import FormatError
from slm_mux.jsonfile import read_json, read_json_lines, starts_with
from slm_mux.tasks import get_task
from slm_mux.tasks.base import Question, question_hash
from slm_mux.tasks.gpqa import LETTERS, GpqaTask, shuffled_question, strip_letter_prefixes
from slm_mux.tasks.gsm8k import Gsm8kTask, plain_decimal
from slm_mux.tasks.math import last_boxed


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode, as SQLite needs (JSON ``\\ud800`` is a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Record:
    """One object of a question file and where it was: its index and, in JSONL, its line."""

    path: str
    index: int
    line: int | None
    fields: dict[str, Any]

    @property
    def place(self) -> str:
        """``line N`` in JSONL, ``item N`` in a JSON array."""
        return f"line {self.line}" if self.line is not None else f"item {self.index}"

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
        if not is_unicode(value):
            raise self.error(f"{key!r} is not valid Unicode (a lone surrogate)")
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
        if not all(is_unicode(v) for v in value):
            raise self.error(f"{key!r} is not valid Unicode (a lone surrogate)")
        return value


def read_records(path: str | Path) -> list[Record]:
    """The objects of a JSON array or JSONL file (blank lines skipped)."""
    name = str(path)
    located: list[tuple[int | None, object]]
    if starts_with(path, "["):
        items = read_json(path)
        located = [(None, item) for item in items]
    else:
        located = list(read_json_lines(path))
    records = []
    for index, (line_number, item) in enumerate(located):
        if not isinstance(item, dict):
            raise Record(name, index, line_number, {}).error("expected a JSON object")
        records.append(Record(name, index, line_number, item))
    if not records:
        raise FormatError(name, None, "no questions")
    return records


def unique_ids(
    questions: list[Question], records: list[Record], *, id_keys: Sequence[str] | None = None
) -> list[Question]:
    """``questions`` (one per record), after checking that no id repeats.

    With ``id_keys``, records holding none of those keys are taken to have
    :func:`~slm_mux.tasks.base.question_hash` ids, so a repeat between two of
    them is reported as the same question twice, to be told apart by an id.
    """

    def hashed(record: Record) -> bool:
        return id_keys is not None and not any(key in record.fields for key in id_keys)

    first: dict[str, Record] = {}
    for question, record in zip(questions, records, strict=True):
        if question.id in first:
            seen = first[question.id]
            if hashed(record) and hashed(seen):
                keys = " or ".join(repr(key) for key in id_keys or ())
                raise record.error(
                    f"same question as {seen.place} and no {keys} to tell them apart"
                )
            raise record.error(f"duplicate id {question.id!r} (first at {seen.place})")
        first[question.id] = record
    return questions


def _record_id(record: Record, id_keys: Sequence[str], text: str) -> str:
    """The id under the first of ``id_keys`` present, else :func:`question_hash` of ``text``."""
    for key in id_keys:
        if key in record.fields:
            return record.scalar(key)
    return question_hash(text)


def _math(record: Record, id_keys: Sequence[str]) -> Question:
    if "answer" in record.fields or "solution" not in record.fields:
        reference = record.scalar("answer")
    else:
        boxed = last_boxed(record.text("solution"))
        if boxed is None:
            raise record.error("missing key 'answer' and no \\boxed{} in 'solution'")
        reference = boxed
    text = record.text("problem")
    return Question(_record_id(record, id_keys, text), text, reference)


def _gsm8k(record: Record, id_keys: Sequence[str]) -> Question:
    answer = record.scalar("answer")
    reference = Gsm8kTask().canonical(answer.rpartition("####")[2])
    if plain_decimal(reference) is None:
        raise record.error("'answer' has no final '#### <number>' line")
    text = record.text("question")
    return Question(_record_id(record, id_keys, text), text, reference)


def _gpqa(record: Record, id_keys: Sequence[str]) -> Question:
    if "Question" in record.fields:
        keys = ["Correct Answer"] + [f"Incorrect Answer {i}" for i in range(1, len(LETTERS))]
        options = [record.text(key).strip() for key in keys]
        text = record.text("Question").strip()
        correct = 0
    else:
        options = strip_letter_prefixes(record.text_list("choices"))
        if not 2 <= len(options) <= len(LETTERS):
            raise record.error(f"'choices' must hold 2 to {len(LETTERS)} options")
        letter = GpqaTask().canonical(record.scalar("answer"))
        if letter not in LETTERS[: len(options)]:
            raise record.error(f"'answer' must be a letter A-{LETTERS[len(options) - 1]}")
        text = record.text("question").strip()
        correct = LETTERS.index(letter)
    question_id = _record_id(record, id_keys, "\n".join([text, *options]))
    return shuffled_question(question_id, text, options, correct)


def _generic(record: Record, id_keys: Sequence[str]) -> Question:
    key = "reference" if "reference" in record.fields else "answer"
    text = record.text("question")
    return Question(_record_id(record, id_keys, text), text, record.scalar(key))


_Convert = Callable[[Record, Sequence[str]], Question]
_LAYOUTS: dict[str, tuple[_Convert, tuple[str, ...]]] = {
    "math": (_math, ("unique_id",)),
    "gsm8k": (_gsm8k, ("id",)),
    "gpqa": (_gpqa, ("id", "Record ID")),
}


def load_questions(task_name: str, path: str | Path) -> list[Question]:
    """The questions of ``path`` in the layout of task ``task_name`` (see the module doc)."""
    get_task(task_name)  # an unknown name raises InputError
    convert, id_keys = _LAYOUTS.get(task_name, (_generic, ("id",)))
    records = read_records(path)
    questions = [convert(record, id_keys) for record in records]
    return unique_ids(questions, records, id_keys=id_keys)
