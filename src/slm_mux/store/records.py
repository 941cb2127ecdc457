"""The store's record types, and how a :class:`~slm_mux.sample.Sample` becomes a row.

The store grades every sample it writes, but it does not import the graders:
a :data:`Grader` is passed in (:func:`default_grader` looks the task's grader
up, importing :mod:`slm_mux.tasks` only when first called).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from slm_mux.errors import InputError
from slm_mux.sample import SPLITS, Sample
from slm_mux.tokens import token_count

Grader = Callable[[str, str | None, str], bool | None]
"""``grader(task, answer, reference)``: the verdict the store keeps (``None``: unknown task)."""

COLUMNS = tuple(field.name for field in fields(Sample))
"""The columns of the ``samples`` table, in :class:`Sample` field order."""
SAMPLE_COLUMNS = ", ".join(COLUMNS)
SAMPLE_ORDER = "ORDER BY model, task, split, question_id, sample"
KEY = ("model", "task", "split", "question_id", "sample")
"""The key of a stored sample."""


def utc_now() -> str:
    """The current time as UTC ISO-8601, the format of ``created_at``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def default_grader(task: str, answer: str | None, reference: str) -> bool | None:
    """The task's grader's verdict; ``None`` for an unknown task."""
    from slm_mux.tasks import graded

    try:
        return graded(task, answer, reference)
    except InputError:
        return None


def shown(value: object) -> str:
    """A stored value in an error message: ``repr``, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Holding:
    """The samples of one model on one task and split: counts, and the stored accuracy.

    ``accuracy`` is the mean of the stored verdicts (``None`` when none is
    stored); ``failed`` counts questions whose collection failed last time.
    """

    task: str
    split: str
    model: str
    questions: int
    samples: int
    no_answer: int
    accuracy: float | None
    failed: int


@dataclass(frozen=True)
class Failure:
    """A question whose collection failed for a model: the last error and how often."""

    model: str
    task: str
    question_id: str
    split: str
    error: str
    attempts: int
    last_at: str


@dataclass(frozen=True)
class ImportReport:
    """What :meth:`Store.import_staged` did.

    ``read`` samples were staged; ``new`` samples were added and ``replaced``
    overwritten (``--replace``);
    ``regraded`` samples came with a ``correct`` that the grader contradicts
    (the grader's verdict was stored), the first of them at ``first_regraded``.
    From merged stores, ``failures`` failed questions were added and
    ``records`` compare records (by kind) added or replaced.
    """

    read: int
    new: int
    replaced: int
    regraded: int
    first_regraded: str | None
    failures: int = 0
    records: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaRecord:
    """One server's counters in a model's latest collection: requests sent, failed
    attempts, cooldowns begun; ``position`` is its place in the pool file's list."""

    model: str
    url: str
    position: int
    requests: int
    errors: int
    cooldowns: int
    collected_at: str


@dataclass(frozen=True)
class RecordedCall:
    """One recorded model call of a live comparison (a row of the ``calls`` table).

    ``step`` names the call within its question's transcript (``"round2"``,
    ``"aggregate"``, ...); ``messages`` is the prompt, ``replies`` the ``n``
    reply texts; tokens are the sums the servers reported (``None`` when
    unknown) and ``requests`` the responses received for the call.
    """

    method: str
    config_hash: str
    task: str
    split: str
    question_id: str
    step: str
    model: str
    n: int
    messages: list[dict[str, str]]
    replies: list[str]
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    requests: int
    created_at: str = ""


@dataclass(frozen=True)
class MethodRun:
    """A compared method on one question set: its config, accumulated wall time, result.

    ``result`` is the JSON of the method's latest table row (``None`` until
    its first run finished).
    """

    method: str
    config_hash: str
    task: str
    split: str
    questions_hash: str
    wall_s: float
    result: dict[str, Any] | None
    updated_at: str


CallKey = tuple[str, str, str]
"""A recorded call within a method configuration: (question_id, step, model)."""
RunKey = tuple[str, str, str, str, str]
"""A method run: (method, config_hash, task, split, questions_hash)."""
CALL_FIELDS = tuple(field.name for field in fields(RecordedCall))
CALL_COLUMNS = ", ".join(CALL_FIELDS)
RUN_MATCH = "method = ? AND config_hash = ? AND task = ? AND split = ? AND questions_hash = ?"


TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens")
"""The token counts of a sample or a recorded call (:mod:`slm_mux.tokens`)."""


def known_counts(values: dict[str, Any]) -> None:
    """Make each token count of a row or record a count or unknown (``None``): the store
    keeps and gives back nothing that ``import`` refuses."""
    for column in TOKEN_COLUMNS:
        if column in values:
            values[column] = token_count(values[column])


def call_from_row(row: Sequence[Any]) -> RecordedCall:
    values = dict(zip(CALL_FIELDS, row, strict=True))
    known_counts(values)
    values["messages"] = json.loads(values["messages"])
    values["replies"] = json.loads(values["replies"])
    return RecordedCall(**values)


def sample_row(sample: Sample, created_at: str, grader: Grader) -> tuple[object, ...]:
    """The column values of ``sample``: graded, stamped with ``created_at`` if it has none."""
    if sample.split not in SPLITS:
        raise InputError(
            f"sample {sample.model}/{sample.question_id}#{sample.sample}: "
            f"split {sample.split!r} is not one of {', '.join(SPLITS)}"
        )
    if sample.sample < 0:
        raise InputError(
            f"sample {sample.model}/{sample.question_id}#{sample.sample}: negative sample index"
        )
    values = {column: getattr(sample, column) for column in COLUMNS}
    known_counts(values)
    values["correct"] = grader(sample.task, sample.answer, sample.reference)
    values["created_at"] = sample.created_at or created_at
    return tuple(values.values())


def sample_from_row(row: Sequence[Any]) -> Sample:
    """The :class:`Sample` of a ``samples`` row (``correct`` back to a bool)."""
    values = dict(zip(COLUMNS, row, strict=True))
    known_counts(values)
    if values["correct"] is not None:
        values["correct"] = bool(values["correct"])
    return Sample(**values)
