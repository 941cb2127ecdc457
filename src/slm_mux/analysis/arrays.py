"""Stored samples of one split as dense arrays, indexed ``[model, question, sample]``.

Answers become integer codes per question (see :func:`slm_mux.selection.encode`):
equivalent answers share a code, :data:`~slm_mux.selection.NO_VOTE` marks a
sample without an answer and :data:`NOT_RECORDED` pads models that have fewer
samples of a question than others.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from slm_mux.columns import SampleColumns
from slm_mux.errors import InputError, StoreError
from slm_mux.sample import Sample
from slm_mux.selection import NO_VOTE
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
        """Arrays of ``split`` for ``models`` (default: all); see :meth:`from_columns`."""
        return cls.from_columns(
            columns_of(samples, split), models=models, known=sorted({s.model for s in samples})
        )

    @classmethod
    def from_columns(
        cls,
        columns: SampleColumns,
        *,
        models: Sequence[str] | None = None,
        known: Sequence[str] = (),
        question_ids: Collection[str] | None = None,
    ) -> SampleArrays:
        """Arrays of ``columns`` for ``models`` (default: all of the split's).

        Models are always kept in one canonical order, sorted by name, whatever
        order they are given in. ``known`` names the models of the other splits
        (for the error message); ``question_ids``, when given, keeps only those
        questions. Each distinct (question, answer) is clustered and graded once.
        """
        split = columns.split
        if not len(columns.model):
            raise StoreError(f"no samples in split {split!r}")
        chosen = _check_models(columns.models, known, models, split)
        lookup = {name: m for m, name in enumerate(chosen)}
        to_chosen = np.array([lookup.get(name, -1) for name in columns.models], dtype=np.int64)
        model = to_chosen[columns.model]
        keep = model >= 0
        if question_ids is not None:
            wanted = set(question_ids)
            wanted_question = np.array([q in wanted for q in columns.question_ids], np.bool_)
            keep = keep & wanted_question[columns.question]
        model, pair, sample = model[keep], columns.pair[keep], columns.sample[keep]
        question = columns.pair_question[pair]
        n_all = len(columns.question_ids)
        present = np.zeros((len(chosen), n_all), dtype=np.bool_)
        present[model, question] = True
        asked = np.asarray(present.any(axis=0), dtype=np.bool_)
        _check_one_task(columns, asked)
        complete = [int(q) for q in np.flatnonzero(present.all(axis=0))]
        complete.sort(key=columns.question_ids.__getitem__)
        if not complete:
            raise StoreError(
                f"no question in split {split!r} has samples from every model ({', '.join(chosen)})"
            )
        renumber = np.full(n_all, -1, dtype=np.int64)
        renumber[complete] = np.arange(len(complete))
        new_question = renumber[question]
        keep = new_question >= 0
        model, pair, sample, question = model[keep], pair[keep], sample[keep], new_question[keep]
        # Recorded order: by sample number within each (model, question).
        order = np.lexsort((sample, question, model))
        model, pair, question = model[order], pair[order], question[order]
        cell = model * len(complete) + question
        recorded = np.bincount(cell, minlength=len(chosen) * len(complete))
        starts = np.concatenate([[0], np.cumsum(recorded)[:-1]])
        slot = np.arange(len(cell)) - starts[cell]
        width = int(recorded.max())
        pair_code, answers, code_correct, tasks = _encode_pairs(
            columns, pair, question, model, complete
        )
        codes = np.full((len(chosen), len(complete), width), NOT_RECORDED, dtype=np.int64)
        codes[model, question, slot] = pair_code[pair]
        return cls(
            split=split,
            models=chosen,
            question_ids=[columns.question_ids[q] for q in complete],
            tasks=tasks,
            codes=codes,
            recorded=recorded.reshape(len(chosen), len(complete)).astype(np.int64),
            code_correct=code_correct,
            answers=answers,
            dropped_questions=int(asked.sum()) - len(complete),
        )

    def subset(self, models: Sequence[str]) -> SampleArrays:
        """The same questions, restricted to ``models`` (kept sorted by name)."""
        if not models:
            raise InputError("no models given")
        unknown = [name for name in models if name not in self.models]
        if unknown:
            raise InputError(f"unknown model {unknown[0]!r} (have: {', '.join(self.models)})")
        index = [self.models.index(name) for name in sorted(models)]
        return replace(
            self,
            models=sorted(models),
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
    present: Sequence[str], known: Sequence[str], models: Sequence[str] | None, split: str
) -> list[str]:
    """The models asked for, checked and sorted by name; all ``present`` ones when ``None``."""
    if models is None:
        return sorted(present)
    if not models:
        raise InputError("no models given")
    if len(set(models)) != len(models):
        twice = next(name for name in models if list(models).count(name) > 1)
        raise InputError(f"model {twice!r} given twice")
    everywhere = sorted({*known, *present})
    for name in models:
        if name not in everywhere:
            raise InputError(f"unknown model {name!r} (store has: {', '.join(everywhere)})")
        if name not in present:
            raise StoreError(f"model {name!r} has no samples in split {split!r}")
    return sorted(models)


def _check_one_task(columns: SampleColumns, asked: BoolArray) -> None:
    """Raise if an asked question id has samples under two tasks."""
    tasks: dict[str, set[str]] = {}
    for q in np.flatnonzero(asked):
        tasks.setdefault(columns.question_ids[q], set()).add(columns.tasks[q])
    for question_id, names in sorted(tasks.items()):
        if len(names) > 1:
            raise StoreError(
                f"question {question_id!r} has samples of tasks "
                f"{', '.join(map(repr, sorted(names)))}; choose one task"
            )


def _encode_pairs(
    columns: SampleColumns,
    pair: IntArray,
    question: IntArray,
    model: IntArray,
    complete: Sequence[int],
) -> tuple[IntArray, list[list[str]], BoolArray, list[str]]:
    """Code per pair, representatives, ``code_correct`` and task per question.

    Rows come in recorded order per (model, question). A question's answers are
    clustered with its task and numbered by first appearance over models (sorted
    by name), then samples; each class is graded once, by its first answer.
    """
    by_question = np.lexsort((model, question))  # stable: recorded order within a model
    first_pairs, first_rows = np.unique(pair[by_question], return_index=True)
    ordered = np.argsort(first_rows)
    pairs = first_pairs[ordered]
    bounds = np.searchsorted(
        question[by_question][first_rows[ordered]], np.arange(len(complete) + 1)
    )
    pair_code = np.full(len(columns.answers), NO_VOTE, dtype=np.int64)
    answers: list[list[str]] = []
    verdicts: list[list[bool]] = []
    tasks: list[str] = []
    for q, source in enumerate(complete):
        task = get_task(columns.tasks[source])
        voting = [
            (int(p), answer)
            for p in pairs[bounds[q] : bounds[q + 1]]
            if (answer := columns.answers[p]) is not None and answer.strip()
        ]
        classes = _cluster(task, columns.question_ids[source], [a for _, a in voting])
        renumber: dict[int, int] = {}
        representatives: list[str] = []
        for (p, answer), cls in zip(voting, classes, strict=True):
            if cls not in renumber:
                renumber[cls] = len(representatives)
                representatives.append(answer)
            pair_code[p] = renumber[cls]
        reference = columns.references[source]
        tasks.append(task.name)
        answers.append(representatives)
        verdicts.append([graded(task.name, answer, reference) for answer in representatives])
    code_correct = np.zeros((len(complete), max(map(len, verdicts), default=1) or 1), np.bool_)
    for q, row in enumerate(verdicts):
        code_correct[q, : len(row)] = row
    return pair_code, answers, code_correct, tasks


def columns_of(samples: Sequence[Sample], split: str) -> SampleColumns:
    """The samples of ``split`` as columns, through the store's own cell format."""
    cells: dict[tuple[str, str, str], tuple[str, list[str], list[str | None]]] = {}
    for s in samples:
        if s.split == split:
            _, numbers, answers = cells.setdefault(
                (s.model, s.task, s.question_id), (s.reference, [], [])
            )
            numbers.append(str(s.sample))
            answers.append(s.answer)
    return SampleColumns.from_cells(
        split,
        (
            (model, task, qid, reference, ",".join(numbers), json.dumps(answers))
            for (model, task, qid), (reference, numbers, answers) in cells.items()
        ),
    )


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
