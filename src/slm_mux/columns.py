"""Stored samples of one split as columns: integer ids per row, strings once per id.

The store's array read path (:meth:`slm_mux.store.Store.sample_columns`) and
:meth:`slm_mux.analysis.SampleArrays.from_samples` both produce this; the
analysis builds its dense arrays from it. Rows are groups of samples that share
(model, question, answer), so no object is built per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]


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
