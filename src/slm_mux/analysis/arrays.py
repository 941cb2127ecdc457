"""Stored samples of one split as dense arrays, indexed ``[model, question, sample]``.

Answers become integer codes per question (see :func:`slm_mux.selection.encode`):
equivalent answers share a code, :data:`~slm_mux.selection.NO_VOTE` marks a
sample without an answer and :data:`NOT_RECORDED` pads models that have fewer
samples of a question than others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial

import numpy as np
from numpy.typing import NDArray

from slm_mux.errors import InputError, StoreError
from slm_mux.sample import Sample
from slm_mux.selection import encode
from slm_mux.tasks import Task, get_task, graded

NOT_RECORDED = -2
"""Code of a padding slot: a sample that was never recorded."""

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

_CLUSTERS: dict[tuple[str, str, tuple[str, ...]], list[int]] = {}


def _cluster(task: Task, question_id: str, distinct: Sequence[str]) -> list[int]:
    """The task's classes of a question's distinct answers, cached in-process."""
    key = (task.name, question_id, tuple(distinct))
    if key not in _CLUSTERS:
        _CLUSTERS[key] = list(task.cluster(distinct))
    return _CLUSTERS[key]


@dataclass(frozen=True, eq=False)
class SampleArrays:
    """The samples of one split, for the models given, on the questions all of them answered.

    ``codes[m, q, s]`` is the answer code of sample ``s`` (in recorded order) of
    model ``m`` on question ``q``; ``recorded[m, q]`` counts the recorded ones.
    ``code_correct[q, c]`` says whether code ``c`` is a correct answer to ``q``
    and ``answers[q][c]`` is its first answer string; ``sample_correct[m, q, s]``
    is ``code_correct`` looked up at ``codes[m, q, s]`` (``False`` for no vote
    and padding). Correctness comes from the task's grader only: a verdict
    stored in :attr:`Sample.correct` is not used. ``tasks[q]`` names the task
    of question ``q``; ``dropped_questions`` counts questions left out because
    some model has no sample of them.
    """

    split: str
    models: list[str]
    question_ids: list[str]
    tasks: list[str]
    codes: IntArray
    recorded: IntArray
    code_correct: BoolArray
    answers: list[list[str]]
    dropped_questions: int = 0

    @classmethod
    def from_samples(
        cls, samples: Sequence[Sample], *, models: Sequence[str] | None = None, split: str
    ) -> SampleArrays:
        """Arrays of ``split`` for ``models`` in the given order (default: all, sorted by name)."""
        in_split = [s for s in samples if s.split == split]
        if not in_split:
            raise StoreError(f"no samples in split {split!r}")
        chosen = _check_models(samples, in_split, models, split)
        position = {name: m for m, name in enumerate(chosen)}
        grouped: dict[str, list[list[Sample]]] = {}
        for sample in in_split:
            if sample.model in position:
                rows = grouped.setdefault(sample.question_id, [[] for _ in chosen])
                rows[position[sample.model]].append(sample)
        complete = sorted(qid for qid, rows in grouped.items() if all(rows))
        if not complete:
            raise StoreError(
                f"no question in split {split!r} has samples from every model ({', '.join(chosen)})"
            )
        width = max(len(row) for qid in complete for row in grouped[qid])
        shape = (len(chosen), len(complete), width)
        codes = np.full(shape, NOT_RECORDED, dtype=np.int64)
        recorded = np.zeros(shape[:2], dtype=np.int64)
        answers: list[list[str]] = []
        correct_rows: list[list[bool]] = []
        tasks: list[str] = []
        for q, qid in enumerate(complete):
            rows = [sorted(row, key=lambda s: s.sample) for row in grouped[qid]]
            task = _question_task(qid, rows)
            tasks.append(task.name)
            question_codes, representatives = encode(
                [[s.answer for s in row] for row in rows], partial(_cluster, task, qid)
            )
            reference = rows[0][0].reference
            answers.append(representatives)
            correct_rows.append(
                [graded(task.name, answer, reference) for answer in representatives]
            )
            for m, row in enumerate(rows):
                recorded[m, q] = len(row)
                codes[m, q, : len(row)] = question_codes[m, : len(row)]
        classes = max(max(len(verdicts) for verdicts in correct_rows), 1)
        code_correct = np.zeros((len(complete), classes), dtype=np.bool_)
        for q, verdicts in enumerate(correct_rows):
            code_correct[q, : len(verdicts)] = verdicts
        return cls(
            split=split,
            models=list(chosen),
            question_ids=complete,
            tasks=tasks,
            codes=codes,
            recorded=recorded,
            code_correct=code_correct,
            answers=answers,
            dropped_questions=len(grouped) - len(complete),
        )

    def subset(self, models: Sequence[str]) -> SampleArrays:
        """The same questions, restricted to ``models`` in the given order."""
        if not models:
            raise InputError("no models given")
        unknown = [name for name in models if name not in self.models]
        if unknown:
            raise InputError(f"unknown model {unknown[0]!r} (have: {', '.join(self.models)})")
        index = [self.models.index(name) for name in models]
        return replace(
            self,
            models=list(models),
            codes=self.codes[index],
            recorded=self.recorded[index],
        )

    @cached_property
    def sample_correct(self) -> BoolArray:
        """Whether each sample ``[m, q, s]`` is correct (no vote and padding are not)."""
        by_question_last = np.moveaxis(self.codes, 1, -1)
        return np.moveaxis(self.is_correct(by_question_last), -1, 1)

    def is_correct(self, codes: IntArray) -> BoolArray:
        """Whether each code of shape ``[..., questions]`` is a correct answer; no vote is wrong."""
        questions = np.arange(len(self.question_ids))
        return (codes >= 0) & self.code_correct[questions, np.maximum(codes, 0)]

    def require_samples(self, k: int) -> None:
        """Raise unless every model has at least ``k`` samples of every question."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        short = np.argwhere(self.recorded < k)
        if short.size:
            m, q = (int(i) for i in short[0])
            raise StoreError(
                f"k={k} but model {self.models[m]!r} has only {int(self.recorded[m, q])} "
                f"samples for question {self.question_ids[q]!r}"
            )


def _check_models(
    samples: Sequence[Sample], in_split: Sequence[Sample], models: Sequence[str] | None, split: str
) -> list[str]:
    """The models asked for, checked against the samples; all of the split's when ``None``."""
    present = sorted({s.model for s in in_split})
    if models is None:
        return present
    if not models:
        raise InputError("no models given")
    if len(set(models)) != len(models):
        twice = next(name for name in models if list(models).count(name) > 1)
        raise InputError(f"model {twice!r} given twice")
    known = sorted({s.model for s in samples})
    for name in models:
        if name not in known:
            raise InputError(f"unknown model {name!r} (store has: {', '.join(known)})")
        if name not in present:
            raise StoreError(f"model {name!r} has no samples in split {split!r}")
    return list(models)


def _question_task(question_id: str, rows: Sequence[Sequence[Sample]]) -> Task:
    """The one task all samples of a question belong to."""
    names = sorted({s.task for row in rows for s in row})
    if len(names) > 1:
        raise StoreError(
            f"question {question_id!r} has samples of tasks {', '.join(map(repr, names))}; "
            "choose one task"
        )
    return get_task(names[0])


def validation_accuracy(validation: SampleArrays) -> dict[str, float]:
    """Mean per-sample accuracy of each model on the (common) validation questions.

    A sample without an answer is wrong.
    """
    if validation.split != "validation":
        raise InputError(
            f"validation accuracy needs the validation split, got {validation.split!r}"
        )
    correct = validation.sample_correct.sum(axis=(1, 2))
    total = validation.recorded.sum(axis=1)
    return {name: float(correct[m] / total[m]) for m, name in enumerate(validation.models)}


def fewest_samples(*arrays: SampleArrays) -> int:
    """The largest k every model has on every question of all ``arrays`` (default k)."""
    return min(int(a.recorded.min()) for a in arrays)
