"""inspect_ai logs (``.eval`` archives and ``.json`` files), read with inspect_ai's own
reader (the ``inspect`` extra: ``pip install "slm-mux[inspect]"``).

One sample per epoch: epoch ``e`` of a question is stored as sample ``e - 1``, its text
``output.completion``. The model is the log's (``openai-api/<service>/NAME`` and
``<provider>/NAME`` give ``NAME``), the reference the sample's target, the question id
the hash of the input text (:func:`~slm_mux.tasks.base.question_hash`), so logs of
several models line up whatever their sample ids.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slm_mux.errors import FormatError, InputError
from slm_mux.interop.common import (
    Answered,
    QuestionSets,
    Row,
    mapped_task,
    reference_of,
    sample_rows,
)
from slm_mux.jsonfile import TOO_DEEP
from slm_mux.store import Staging
from slm_mux.tasks.base import question_hash

_JSON_LOG_HEAD = re.compile(rb'\A\s*\{\s*"version"\s*:\s*\d+\s*,\s*"status"\s*:')
"""How an inspect_ai ``.json`` log begins."""


def is_inspect_log(path: Path) -> bool:
    """Whether ``path`` is an inspect_ai log: an ``.eval`` file, or a ``.json`` file that
    begins as inspect_ai writes them (``{"version": N, "status": ...``)."""
    if not path.is_file():
        return False
    if path.suffix == ".eval":
        return True
    if path.suffix != ".json":
        return False
    with path.open("rb") as stream:
        return _JSON_LOG_HEAD.match(stream.read(256)) is not None


def inspect_logs(path: Path) -> list[Path]:
    """``path`` when it is an inspect_ai log; the logs in it (sorted) when it is a folder."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if is_inspect_log(p))
    return [path] if is_inspect_log(path) else []


def _read(path: Path) -> Any:
    """The log, read by inspect_ai; a broken one is a :class:`FormatError` (with its line,
    for a ``.json`` file)."""
    try:
        from inspect_ai.log import read_eval_log
    except ImportError:
        raise InputError(
            f'{path}: reading inspect_ai logs needs inspect_ai (pip install "slm-mux[inspect]")'
        ) from None
    if path.suffix == ".json":
        try:
            json.loads(path.read_bytes())
        except ValueError as error:
            line = getattr(error, "lineno", None)
            raise FormatError(str(path), line, f"not a complete inspect_ai log ({error})") from None
        except RecursionError:
            raise FormatError(str(path), None, f"invalid JSON ({TOO_DEEP})") from None
    try:
        return read_eval_log(str(path))
    except RecursionError:
        raise FormatError(str(path), None, f"inspect_ai cannot read it: {TOO_DEEP}") from None
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FormatError(str(path), None, f"inspect_ai cannot read it: {reason}") from None


def model_name(logged: str) -> str:
    """The model of an inspect_ai model string, without its provider (and service)."""
    parts = logged.split("/")
    provider_parts = 2 if parts[0] == "openai-api" and len(parts) > 2 else 1
    return "/".join(parts[provider_parts:]) or logged


def _input_text(value: Any) -> str:
    """A sample's input: its text, or the text of its last user message."""
    if isinstance(value, str):
        return value
    users = [message for message in value if getattr(message, "role", None) == "user"]
    return str(users[-1].text) if users else ""


def _target_text(value: Any) -> str:
    return str(value[0] if isinstance(value, list) and value else value)


def _answered(log: Any, task: str, name: str) -> Iterator[tuple[str, str, Answered]]:
    """(where, question id, question) per question, its generations in epoch order."""
    by_question: dict[str, tuple[str, str, str, dict[int, str]]] = {}
    for sample in log.samples:
        where = f"{name}: sample {sample.id!r} epoch {sample.epoch}"
        if sample.error is not None:
            raise FormatError(name, None, f"sample {sample.id!r} epoch {sample.epoch} failed")
        text = _input_text(sample.input)
        question_id = question_hash(text)
        reference = reference_of(task, _target_text(sample.target))
        entry = by_question.setdefault(question_id, (where, text, reference, {}))
        entry[3][sample.epoch] = sample.output.completion if sample.output else ""
    for question_id, (where, text, reference, epochs) in by_question.items():
        if sorted(epochs) != list(range(1, len(epochs) + 1)):
            raise FormatError(name, None, f"{where}: epochs {sorted(epochs)} are not 1..n")
        generations = [epochs[epoch] for epoch in sorted(epochs)]
        yield where, question_id, Answered(question_id, text, reference, generations)


def stage_inspect(
    staging: Staging,
    path: Path,
    *,
    task: str | None,
    split: str,
    model: str | None,
    questions: QuestionSets,
) -> int:
    """Stage every sample of an inspect_ai log; returns the number read. ``task``
    overrides the mapped task, ``model`` the log's model."""
    name = str(path)
    log = _read(path)
    if log.status != "success":
        raise FormatError(
            name, None, f"the run's status is {log.status!r}; only a finished run is imported"
        )
    if not log.samples:
        raise FormatError(name, None, "the log holds no samples (was it written with samples?)")
    graded_by = mapped_task(log.eval.task, task, name)
    model_name_ = model or model_name(log.eval.model)
    base = staging.source(name, "store")  # a sample has no line: conflicts name the file
    before = staging.read
    texts: list[tuple[str, str, str, int]] = []

    def rows() -> Iterator[Row]:
        for index, (where, question_id, answered) in enumerate(_answered(log, graded_by, name)):
            questions.note(graded_by, split, model_name_, question_id, where)
            texts.append((question_id, answered.text, answered.reference, base + index))
            yield from sample_rows(model_name_, graded_by, split, answered, base + index)

    staging.add_samples(rows())
    staging.add_questions(graded_by, split, texts)
    return staging.read - before
