"""Stored samples of one split as columns: integer ids per sample, strings once per id.

The store's array read path (:meth:`slm_mux.store.Store.sample_columns`) and
:meth:`slm_mux.analysis.SampleArrays.from_samples` both produce this; the
analysis builds its dense arrays from it. No object is built per sample: the
store hands over one row per (model, question) and each distinct answer of a
question becomes one id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]

Cell = tuple[str, str, str, str, str, str]
"""One (model, question) of a split, as the store reads it: model, task, question id,
reference, its sample numbers comma-joined and its answers as a JSON array (same order)."""


@dataclass(frozen=True, eq=False)
class SampleColumns:
    """Samples of one split.

    Sample ``i`` is sample number ``sample[i]`` of model ``models[model[i]]``;
    its answer is the distinct (question, answer) pair ``pair[i]``: the answer
    string ``answers[pair[i]]`` (``None`` when empty) to question
    ``question_ids[pair_question[pair[i]]]``. ``tasks[q]`` and ``references[q]``
    are question ``q``'s task and reference answer.
    """

    split: str
    models: list[str]
    question_ids: list[str]
    tasks: list[str]
    references: list[str]
    answers: list[str | None]
    pair_question: IntArray
    model: IntArray
    pair: IntArray
    sample: IntArray

    @property
    def question(self) -> IntArray:
        """The question index of each sample."""
        return self.pair_question[self.pair]

    @classmethod
    def from_cells(cls, split: str, cells: Iterable[Cell]) -> SampleColumns:
        """Columns of ``split`` from its :data:`Cell` rows, one Python step per sample."""
        models: dict[str, int] = {}
        questions: dict[tuple[str, str], int] = {}
        references: list[str] = []
        pair_ids: list[dict[str | None, int]] = []  # per question: answer -> its index there
        cell_model: list[int] = []
        cell_question: list[int] = []
        numbers: list[str] = []
        answer_lists: list[str] = []
        for model, task, question_id, reference, sample_list, answer_list in cells:
            q = questions.setdefault((task, question_id), len(questions))
            if q == len(references):
                references.append(reference)
                pair_ids.append({})
            cell_model.append(models.setdefault(model, len(models)))
            cell_question.append(q)
            numbers.append(sample_list)
            answer_lists.append(answer_list)
        per_cell: list[list[str | None]] = json.loads(f"[{','.join(answer_lists)}]")
        local: list[int] = []
        for q, answers in zip(cell_question, per_cell, strict=True):
            ids = pair_ids[q]
            local += [ids.setdefault(answer, len(ids)) for answer in answers]
        counts = np.fromiter(map(len, per_cell), dtype=np.int64, count=len(per_cell))
        sizes = np.fromiter(map(len, pair_ids), dtype=np.int64, count=len(pair_ids))
        first_pair = np.cumsum(sizes) - sizes
        question = np.repeat(np.array(cell_question, dtype=np.int64), counts)
        return cls(
            split=split,
            models=list(models),
            question_ids=[question_id for _, question_id in questions],
            tasks=[task for task, _ in questions],
            references=references,
            answers=[answer for ids in pair_ids for answer in ids],
            pair_question=np.repeat(np.arange(len(sizes), dtype=np.int64), sizes),
            model=np.repeat(np.array(cell_model, dtype=np.int64), counts),
            pair=first_pair[question] + np.array(local, dtype=np.int64),
            sample=(
                np.fromstring(",".join(numbers), dtype=np.int64, sep=",")
                if numbers
                else np.zeros(0, dtype=np.int64)
            ),
        )
