"""Reading and writing samples: the JSON Lines interchange format and the authors' layout.

JSON Lines, one sample per line::

    {"model": "m", "question_id": "q1", "sample": 0, "answer": "42" | null,
     "reference": "42", "split": "validation" | "test"}

plus, optionally, every other :class:`~slm_mux.sample.Sample` field (``task``,
``text``, ``prompt_tokens``, ``completion_tokens``, ``latency_s``,
``finish_reason``, ``settings_hash``, ``created_at``, ``correct``). An unknown
key is an error. ``correct``, when absent or null, is graded by the task.
A line with a ``"kind"`` is a question (its text) or a compare record
(:mod:`slm_mux.records_jsonl`); :func:`export_jsonl` writes a store's samples
with both, so ``export`` then ``import`` moves everything a report reads.

The authors' layout (the SLM-MUX reference repository) is one JSON file per
model::

    {"model": "m", "responses": [
        {"problem" | "question": "...",
         "reference_answer" | "correct_answer" | "answer": "...",
         "id" | "question_id" | "unique_id": "..."  (optional),
         "samples": [{"extracted_answer": "..." | null,
                      "response" | "text" | "raw_response": "..." (optional)}, ...]},
        ...]}

An SQLite file is another store: its samples, questions and failures are
merged (:func:`~slm_mux.store.stage_store`). An lm-evaluation-harness output folder
or an inspect_ai log is read by :mod:`slm_mux.interop`.

Files are read into a :class:`~slm_mux.store.Staging` area, validated and
checked against each other there; :func:`import_files` then writes all of
them to the store in one transaction, or nothing.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, BinaryIO, Literal, TextIO

from slm_mux.errors import FormatError, InputError
from slm_mux.interop import QuestionSets, is_harness_log, stage_harness_log
from slm_mux.jsonfile import TOO_DEEP, open_bytes, read_json, read_json_lines
from slm_mux.records_jsonl import StagedRecords, checked
from slm_mux.sample import SPLITS, Sample
from slm_mux.store import (
    RECORD_TABLES,
    ImportReport,
    Staging,
    Store,
    is_store_file,
    stage_store,
)
from slm_mux.tasks import get_task, task_names
from slm_mux.tasks.base import question_hash
from slm_mux.tasks.data import is_unicode
from slm_mux.tokens import COUNT_END, is_count

Format = Literal["jsonl", "authors"]
PathLike = str | os.PathLike[str]

_Check = Callable[[Any], bool]


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_seconds(value: Any) -> bool:
    # The upper bound keeps out infinity, NaN and integers too large for a float.
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 <= value <= sys.float_info.max
    )


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_split(value: Any) -> bool:
    return isinstance(value, str) and value in SPLITS


def _or_null(check: _Check) -> _Check:
    return lambda value: value is None or check(value)


_REQUIRED: dict[str, tuple[_Check, str]] = {
    "model": (_is_name, "a non-empty string"),
    "question_id": (_is_name, "a non-empty string"),
    "split": (_is_split, " or ".join(repr(split) for split in SPLITS)),
    "sample": (is_count, "an integer from 0 to 2**63-1"),
    "answer": (_or_null(_is_string), "a string or null"),
    "reference": (_is_string, "a string"),
}
_OPTIONAL: dict[str, tuple[_Check, str]] = {
    "task": (_is_name, "a task name"),
    "correct": (_or_null(_is_bool), "true, false or null"),
    "text": (_or_null(_is_string), "a string or null"),
    "prompt_tokens": (_or_null(is_count), "an integer from 0 to 2**63-1 or null"),
    "completion_tokens": (_or_null(is_count), "an integer from 0 to 2**63-1 or null"),
    "latency_s": (_or_null(_is_seconds), "a finite non-negative number or null"),
    "finish_reason": (_or_null(_is_string), "a string or null"),
    "settings_hash": (_or_null(_is_string), "a string or null"),
    "created_at": (_or_null(_is_string), "a string or null"),
}
_FIELDS = {**_REQUIRED, **_OPTIONAL}
_ALWAYS_WRITTEN = frozenset(_REQUIRED) | {"task"}
_SAMPLE_FIELDS = tuple(field.name for field in fields(Sample))

_QUESTION_KEYS = ("problem", "question")
_REFERENCE_KEYS = ("reference_answer", "correct_answer", "answer")
_ID_KEYS = ("id", "question_id", "unique_id")
_MODEL_KEYS = ("model", "model_name")
_RESPONSE_KEYS = ("response", "text", "raw_response")


def _shown(value: Any) -> str:
    """A JSON value as a short one-line string, for error messages."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except RecursionError:
        return "a value nested too deeply"
    return text if len(text) <= 40 else text[:37] + "..."


# JSON Lines


_KNOWN_KEYS = frozenset(_FIELDS)
_REQUIRED_KEYS = frozenset(_REQUIRED)
_TASK_NAMES = frozenset(task_names())


def _not_an_object(record: Any) -> str:
    """Why a JSON Lines record that is not an object is refused."""
    if isinstance(record, list):
        return (
            f"expected a JSON object (one sample per line), got an array {_shown(record)}; "
            "only a file holding one JSON document is read as the authors' layout"
        )
    return f"expected a JSON object, got {_shown(record)}"


_OPTIONAL_ORDER = tuple(name for name in _SAMPLE_FIELDS if name in _OPTIONAL and name != "task")
_Row = tuple[tuple[str, ...], tuple[object, ...]]


def _jsonl_row(record: Any, path: str, lineno: int, default_task: str, origin: int) -> _Row:
    """The staged row (see :meth:`Staging.add_samples`) of one JSONL line; raises
    :class:`FormatError` if malformed.

    A record of the required keys (and ``task``) whose values all pass at a glance,
    ASCII strings among them, is taken here; most lines of a large file are like
    that. Any other goes through :func:`_checked_row`, which names the fault.
    """
    size = len(record) if type(record) is dict else 0
    if size == len(_REQUIRED):
        task = default_task
    elif size == len(_REQUIRED) + 1 and type(task := record.get("task")) is str:
        if task not in _TASK_NAMES:
            return _checked_row(record, path, lineno, default_task, origin)
    else:
        return _checked_row(record, path, lineno, default_task, origin)
    try:
        model, question_id, split = record["model"], record["question_id"], record["split"]
        reference, sample, answer = record["reference"], record["sample"], record["answer"]
    except KeyError:
        return _checked_row(record, path, lineno, default_task, origin)
    if (
        type(model) is str
        and type(question_id) is str
        and type(reference) is str
        and (answer is None or (type(answer) is str and answer.isascii()))
        and type(sample) is int
        and 0 <= sample < COUNT_END
        and split in SPLITS
        and model.isascii()
        and question_id.isascii()
        and reference.isascii()
        and model.strip() != ""
        and question_id.strip() != ""
    ):
        return (), (model, task, split, question_id, reference, sample, answer, origin)
    return _checked_row(record, path, lineno, default_task, origin)


def _checked_row(record: Any, path: str, lineno: int, default_task: str, origin: int) -> _Row:
    """The row of any JSONL record, every key and value checked; raises
    :class:`FormatError` naming the first fault."""
    if type(record) is not dict:
        raise FormatError(path, lineno, _not_an_object(record))
    keys = record.keys()
    if not (keys <= _KNOWN_KEYS and keys >= _REQUIRED_KEYS):
        unknown = [key for key in record if key not in _FIELDS]
        if unknown:
            raise FormatError(path, lineno, f"unknown key {unknown[0]!r}")
        missing = [key for key in _REQUIRED if key not in record]
        raise FormatError(path, lineno, f"missing key {missing[0]!r}")
    for key, value in record.items():
        check, expected = _FIELDS[key]
        if not check(value):
            raise FormatError(path, lineno, f"{key!r} must be {expected}, got {_shown(value)}")
        if type(value) is str and not (value.isascii() or is_unicode(value)):
            raise FormatError(path, lineno, f"{key!r} is not valid Unicode (a lone surrogate)")
    task = record.get("task", default_task)
    if task not in _TASK_NAMES:
        raise FormatError(path, lineno, f"unknown task {task!r}")
    required = (
        record["model"],
        task,
        record["split"],
        record["question_id"],
        record["reference"],
        record["sample"],
        record["answer"],
    )
    if len(record) == len(_REQUIRED) + ("task" in record):
        return (), (*required, origin)
    optional = tuple(name for name in _OPTIONAL_ORDER if record.get(name) is not None)
    if "latency_s" in optional:
        record["latency_s"] = float(record["latency_s"])
    return optional, (*required, *(record[name] for name in optional), origin)


def stage_jsonl(
    staging: Staging,
    path: PathLike,
    *,
    default_task: str = "exact",
    split: str | None = None,
    model: str | None = None,
) -> int:
    """Validate a JSON Lines file into ``staging``; returns the number of samples read.

    Blank lines are skipped. ``split``/``model``, when given, must match every
    sample line. Any malformed line raises :class:`FormatError` (``file:line:
    reason``). Question and compare records (lines with a ``kind``) are staged too.
    """
    name = str(path)
    get_task(default_task)
    base = staging.source(name)
    before = staging.read

    given = [(2, "split", split), (0, "model", model)]
    filters = [(index, key, wanted) for index, key, wanted in given if wanted is not None]

    records = StagedRecords()

    def rows() -> Iterator[_Row]:
        for lineno, record in read_json_lines(path):
            if type(record) is dict and "kind" in record:
                records.add(checked(record, name, lineno, default_task), base + lineno)
                continue
            row = _jsonl_row(record, name, lineno, default_task, base + lineno)
            for index, key, wanted in filters:
                if row[1][index] != wanted:
                    raise FormatError(
                        name, lineno, f"{key} {row[1][index]!r} is not {wanted!r} (--{key})"
                    )
            yield row

    staging.add_samples(rows())
    records.stage(staging)
    return staging.read - before


def read_jsonl(path: PathLike, *, default_task: str = "exact") -> list[Sample]:
    """Every sample in a JSON Lines file, validated as a whole and graded, in file order.

    A line that repeats an earlier sample's key with the same answer is dropped;
    with a different answer it is an :class:`InputError` naming both lines.
    """
    with Staging() as staging:
        stage_jsonl(staging, path, default_task=default_task)
        staging.check()
        return staging.samples()


def write_jsonl(samples: Iterable[Sample], stream: TextIO) -> int:
    """Write ``samples`` as JSON Lines to ``stream``; returns how many were written.

    Optional fields that are ``None`` are left out, so reading the output back
    gives the same samples (for samples that have ``correct`` set).
    """
    written = 0
    for sample in samples:
        record = {
            name: value
            for name in _SAMPLE_FIELDS
            if (value := getattr(sample, name)) is not None or name in _ALWAYS_WRITTEN
        }
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        written += 1
    return written


def export_jsonl(
    store: Store,
    stream: TextIO,
    *,
    split: str | None = None,
    models: Sequence[str] | None = None,
    task: str | None = None,
) -> int:
    """Write ``store`` as JSON Lines: question records, samples, compare records;
    returns the number of samples written.

    ``split``, ``models`` and ``task`` pick samples; questions and compare
    records follow ``split`` and ``task``; with ``models``, compare calls of
    those models are written and method runs (of every model) are not.
    """
    for name, split_name, question_id, text, reference in store.questions(task=task, split=split):
        record = {"kind": "question", "task": name, "split": split_name}
        record |= {"question_id": question_id, "text": text, "reference": reference}
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    written = write_jsonl(store.each_sample(split=split, models=models, task=task), stream)
    for table in RECORD_TABLES:
        if models is not None and "model" not in table.columns:
            continue
        for row in store.record_rows(table, task=task, split=split):
            record = table.to_record(row)
            if models is None or record["model"] in models:
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    return written


# The authors' layout


def _scalar(value: Any) -> str | None:
    """A JSON string or number as text; ``None`` for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _first_key(item: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((key for key in keys if key in item), None)


def _require_unicode(name: str, where: str, *texts: str | None) -> None:
    """Raise :class:`FormatError` unless every text is valid Unicode (the store refuses others)."""
    if not all(text is None or is_unicode(text) for text in texts):
        raise FormatError(name, None, f"{where}: a string is not valid Unicode (a lone surrogate)")


def _authors_responses(name: str, data: Any) -> tuple[list[Any], str | None]:
    """The ``responses`` list of an authors' layout document, and its model name if any."""
    if isinstance(data, list):
        return data, None
    if not isinstance(data, dict) or not isinstance(data.get("responses"), list):
        raise FormatError(name, None, "expected an object with a 'responses' list")
    model_key = _first_key(data, _MODEL_KEYS)
    if model_key is None:
        return data["responses"], None
    if not _is_name(data[model_key]):
        raise FormatError(name, None, f"{model_key!r} must be a non-empty string")
    _require_unicode(name, repr(model_key), data[model_key])
    return data["responses"], data[model_key]


def _authors_question(name: str, where: str, item: Any) -> tuple[str, str, str, list[Any]]:
    """The question id, text, reference and sample entries of one response."""
    if not isinstance(item, dict):
        raise FormatError(name, None, f"{where}: expected an object, got {_shown(item)}")
    question_key = _first_key(item, _QUESTION_KEYS)
    if question_key is None or not isinstance(item[question_key], str):
        raise FormatError(name, None, f"{where}: no question text ('problem' or 'question')")
    question = item[question_key]
    reference_key = _first_key(item, _REFERENCE_KEYS)
    reference = None if reference_key is None else _scalar(item[reference_key])
    if reference is None:
        raise FormatError(
            name, None, f"{where}: no reference ('reference_answer', 'correct_answer' or 'answer')"
        )
    _require_unicode(name, where, question, reference)
    id_key = _first_key(item, _ID_KEYS)
    if id_key is None:
        question_id = question_hash(question)
    else:
        raw_id = item[id_key]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
            raise FormatError(
                name, None, f"{where}: {id_key!r} must be a non-empty string or an integer"
            )
        question_id = str(raw_id)
    entries = item.get("samples")
    if not isinstance(entries, list):
        raise FormatError(name, None, f"{where}: 'samples' must be a list")
    _require_unicode(name, where, question_id)
    return question_id, question, reference.strip(), entries


def _authors_sample(name: str, where: str, entry: Any) -> tuple[str | None, str | None]:
    """The extracted answer (``None`` when empty) and response text of one sample entry."""
    if not isinstance(entry, dict) or "extracted_answer" not in entry:
        raise FormatError(name, None, f"{where}: expected an object with an 'extracted_answer'")
    extracted = entry["extracted_answer"]
    answer = "" if extracted is None else _scalar(extracted)
    if answer is None:
        raise FormatError(
            name, None, f"{where}: 'extracted_answer' must be a string, number or null"
        )
    response_key = _first_key(entry, _RESPONSE_KEYS)
    text = None if response_key is None else entry[response_key]
    if text is not None and not isinstance(text, str):
        raise FormatError(name, None, f"{where}: {response_key!r} must be a string or null")
    _require_unicode(name, where, answer, text)
    return answer.strip() or None, text


def stage_authors(
    staging: Staging,
    path: PathLike,
    *,
    model: str | None = None,
    split: str,
    task: str = "exact",
) -> int:
    """Validate one model's file in the authors' layout into ``staging``; returns the
    number of samples read.

    The model is ``model``, else the file's ``model``/``model_name``, else the
    file stem. A question without an id gets
    :func:`~slm_mux.tasks.base.question_hash` of its text, so the same question
    in different models' files gets the same id. The sample index is the
    position in ``samples``. A malformed file raises :class:`FormatError`
    naming the response.
    """
    name = str(path)
    checked_split = next((known for known in SPLITS if known == split), None)
    if checked_split is None:
        raise InputError(f"{name}: split {split!r} is not one of {', '.join(SPLITS)}")
    get_task(task)
    responses, file_model = _authors_responses(name, read_json(path))
    model_name = model or file_model or Path(path).stem
    base = staging.source(name, "response")
    before = staging.read
    questions: list[tuple[str, str, str, int]] = []
    first_seen: dict[str, int] = {}

    def rows() -> Iterator[_Row]:
        for index, item in enumerate(responses):
            where = f"responses[{index}]"
            question_id, question, reference, entries = _authors_question(name, where, item)
            if question_id in first_seen:
                raise FormatError(
                    name,
                    None,
                    f"{where}: question {question_id!r} repeats "
                    f"responses[{first_seen[question_id]}]",
                )
            first_seen[question_id] = index
            questions.append((question_id, question, reference, base + index))
            for number, entry in enumerate(entries):
                answer, text = _authors_sample(name, f"{where}.samples[{number}]", entry)
                required = (model_name, task, checked_split, question_id, reference, number, answer)
                if text is None:
                    yield (), (*required, base + index)
                else:
                    yield ("text",), (*required, text, base + index)

    staging.add_samples(rows())
    staging.add_questions(task, checked_split, questions)
    return staging.read - before


def read_authors(
    path: PathLike, *, model: str | None = None, split: str, task: str = "exact"
) -> list[Sample]:
    """Samples from one model's file in the authors' layout (see :func:`stage_authors`),
    graded by ``task``, in file order."""
    with Staging() as staging:
        stage_authors(staging, path, model=model, split=split, task=task)
        staging.check()
        return staging.samples()


def _is_document(raw: bytes) -> bool:
    """Whether ``raw`` is one JSON document."""
    try:
        json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return False
    return True


def _more_follows(stream: BinaryIO) -> bool:
    """Whether anything but whitespace is left to read from ``stream``."""
    while chunk := stream.read(4096):
        if chunk.strip():
            return True
    return False


def detect_format(path: PathLike) -> Format:
    """The layout of ``path``, judged by content.

    ``"authors"`` for a file holding one JSON document that is an object with
    ``responses`` or an array (or a broken one starting with ``[``, so the
    error names its place); ``"jsonl"`` otherwise, e.g. several lines of arrays.
    A first line that is a whole document with more after it is JSON Lines
    without reading further.
    """
    try:
        return _detected_format(path)
    except RecursionError:
        raise FormatError(str(path), None, f"invalid JSON ({TOO_DEEP})") from None


def _detected_format(path: PathLike) -> Format:
    """:func:`detect_format`, which raises ``RecursionError`` on JSON nested too deeply."""
    with open_bytes(path) as stream:
        head = b""
        while not head.strip() and (line := stream.readline()):
            head += line
        if _is_document(head) and _more_follows(stream):
            return "jsonl"
        text = (head + stream.read()).decode("utf-8", errors="replace").lstrip()
    if not text.startswith(("[", "{")):
        return "jsonl"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:  # several documents: JSON Lines
        return "authors" if text.startswith("[") and error.msg != "Extra data" else "jsonl"
    except ValueError:  # a number too long to read
        return "jsonl"
    return "authors" if isinstance(data, list) or "responses" in data else "jsonl"


def stage_file(
    staging: Staging,
    path: PathLike,
    *,
    split: str | None = None,
    task: str | None = None,
    model: str | None = None,
    questions: QuestionSets | None = None,
) -> int:
    """Validate a file in any format into ``staging``; returns the number of samples read.

    For the authors' layout ``split`` is required and ``model`` overrides the
    file's model. For JSON Lines, ``task`` is the default task (default ``exact``), and
    ``split``/``model``, when given, must match every line. An SQLite file is
    another store, merged whole (:func:`~slm_mux.store.stage_store`). A harness log
    (:func:`~slm_mux.interop.stage_harness_log`) notes its questions in ``questions``.
    """
    if is_harness_log(path):
        return stage_harness_log(
            staging,
            path,
            task=task,
            split=split,
            model=model,
            questions=QuestionSets() if questions is None else questions,
        )
    task = task or "exact"
    if is_store_file(path):
        if split is not None or model is not None:
            raise InputError(f"{path}: a store is merged whole; --split and --model do not apply")
        return stage_store(staging, path)
    if detect_format(path) == "authors":
        if split is None:
            raise InputError(f"{path}: the authors' layout has no split; give one")
        return stage_authors(staging, path, model=model, split=split, task=task)
    return stage_jsonl(staging, path, default_task=task, split=split, model=model)


def import_files(
    paths: Sequence[PathLike],
    store: PathLike,
    *,
    split: str | None = None,
    task: str | None = None,
    model: str | None = None,
    replace: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> ImportReport:
    """Import every file into ``store``, all or nothing (see :meth:`Store.import_staged`).

    Every file is read, validated and checked against the others before the
    store is opened (or created); ``progress`` hears one line per file read.
    The models of harness logs must have answered the same questions.
    """
    questions = QuestionSets()
    with Staging(beside=Path(store)) as staging:
        for path in paths:
            read = stage_file(
                staging, path, split=split, task=task, model=model, questions=questions
            )
            progress(f"{path}: {read} samples read")
        questions.check()
        staging.check()
        with Store(store) as opened:
            return opened.import_staged(staging, replace=replace)
