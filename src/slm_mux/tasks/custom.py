"""Custom question sets from a JSONL file, graded by a built-in task.

Each line is one object::

    {"id": "q1", "question": "...", "reference": "...", "type": "math"}

``id`` defaults to a hash of the question text (so it names the question, not
its position); ``type`` (``exact``, ``math``, ``gsm8k`` or ``gpqa``) defaults
to ``exact`` and may differ from line to line: each question is prompted,
graded and stored under its own type's task. ``choices`` lists the options of a ``gpqa``
question, shown in the given order; its ``reference`` is the letter of the
correct option or the option's text. Other keys are errors, so a misspelt key
is never silently ignored.
"""

from __future__ import annotations

from pathlib import Path

from slm_mux.tasks.base import Question, question_hash
from slm_mux.tasks.data import Record, read_records, unique_ids
from slm_mux.tasks.gpqa import LETTERS, GpqaTask, strip_letter_prefixes
from slm_mux.tasks.gsm8k import Gsm8kTask, plain_decimal

CUSTOM_TYPES = ("exact", "math", "gsm8k", "gpqa")
_KEYS = ("id", "question", "reference", "type", "choices")


def _choices(record: Record, kind: str) -> tuple[str, ...]:
    if "choices" not in record.fields:
        if kind == "gpqa":
            raise record.error("type 'gpqa' needs 'choices'")
        return ()
    if kind != "gpqa":
        raise record.error(f"'choices' is only for type 'gpqa', not {kind!r}")
    options = strip_letter_prefixes(record.text_list("choices"))
    if not 2 <= len(options) <= len(LETTERS):
        raise record.error(f"'choices' must hold 2 to {len(LETTERS)} options")
    return tuple(options)


def _reference(record: Record, kind: str, choices: tuple[str, ...]) -> str:
    reference = record.scalar("reference")
    if kind == "gsm8k":
        number = plain_decimal(Gsm8kTask().canonical(reference))
        if number is None:
            raise record.error(f"'reference' {reference!r} is not a number")
        return number
    if kind == "gpqa":
        letter = GpqaTask().canonical(reference)
        if letter in LETTERS[: len(choices)]:
            return letter
        if reference in choices:
            return LETTERS[choices.index(reference)]
        raise record.error(f"'reference' {reference!r} is neither an option letter nor an option")
    return reference


def load_custom(path: str | Path) -> list[tuple[str, Question]]:
    """The ``(type, question)`` lines of a custom JSONL file, in file order.

    A malformed line raises :class:`FormatError` naming the file and line; nothing partial.
    """
    records = read_records(path)
    kinds = []
    questions = []
    for record in records:
        unknown = sorted(set(record.fields) - set(_KEYS))
        if unknown:
            raise record.error(f"unknown key {unknown[0]!r}; expected {', '.join(_KEYS)}")
        kind = record.text("type") if "type" in record.fields else "exact"
        if kind not in CUSTOM_TYPES:
            raise record.error(f"unknown type {kind!r}; choose from {', '.join(CUSTOM_TYPES)}")
        choices = _choices(record, kind)
        text = record.text("question")
        question_id = record.scalar("id") if "id" in record.fields else question_hash(text)
        reference = _reference(record, kind, choices)
        kinds.append(kind)
        questions.append(Question(question_id, text, reference, choices))
    unique = unique_ids(questions, records, id_keys=("id",))
    return list(zip(kinds, unique, strict=True))
