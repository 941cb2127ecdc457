"""SampleArrays: codes, padding, correctness, question filtering and errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from slm_mux.analysis.arrays import NOT_RECORDED, SampleArrays, validation_accuracy
from slm_mux.errors import InputError, StoreError
from slm_mux.selection import NO_VOTE

from .builders import Table, random_table, samples_from_table

TABLE: Table = {
    "a": {"q2": ["7", " 7", None, "8"], "q10": ["x"], "q3": ["y"]},
    "b": {"q2": ["8", "", "9"], "q10": ["x", "z"]},
}
REFERENCES = {"q2": "7", "q10": "x", "q3": "y"}


@pytest.fixture
def arrays() -> SampleArrays:
    return SampleArrays.from_samples(samples_from_table(TABLE, REFERENCES), split="test")


def test_questions_every_model_has_sorted_and_dropped_counted(arrays: SampleArrays) -> None:
    assert arrays.models == ["a", "b"]
    assert arrays.question_ids == ["q10", "q2"]
    assert arrays.dropped_questions == 1
    assert arrays.tasks == ["exact", "exact"]


def test_codes_compact_per_question_with_no_vote_and_padding(arrays: SampleArrays) -> None:
    q2 = arrays.question_ids.index("q2")
    # "7" and " 7" are one class under the exact task; None and "" are no vote.
    assert arrays.codes[0, q2].tolist() == [0, 0, NO_VOTE, 1]
    assert arrays.codes[1, q2].tolist() == [1, NO_VOTE, 2, NOT_RECORDED]
    assert arrays.answers[q2] == ["7", "8", "9"]
    assert arrays.code_correct[q2, :3].tolist() == [True, False, False]
    assert arrays.recorded[:, q2].tolist() == [4, 3]
    assert arrays.sample_correct[0, q2].tolist() == [True, True, False, False]
    q10 = arrays.question_ids.index("q10")
    assert arrays.codes[:, q10, :2].tolist() == [[0, NOT_RECORDED], [0, 1]]
    assert arrays.recorded[:, q10].tolist() == [1, 2]


def test_models_are_sorted_by_name_whatever_the_given_order() -> None:
    given = SampleArrays.from_samples(
        samples_from_table(TABLE, REFERENCES), models=["b", "a"], split="test"
    )
    default = SampleArrays.from_samples(samples_from_table(TABLE, REFERENCES), split="test")
    assert given.models == default.models == ["a", "b"]
    np.testing.assert_array_equal(given.codes, default.codes)
    q2 = given.question_ids.index("q2")
    assert given.answers[q2] == ["7", "8", "9"]  # numbered from a's samples first


def test_stored_verdicts_are_ignored_in_favour_of_the_grader() -> None:
    table, references = random_table(4, models=2, questions=6, samples=3, ragged=True)
    graded = samples_from_table(table, references)
    flipped = [replace(s, correct=s.answer != references[s.question_id]) for s in graded]
    arrays = SampleArrays.from_samples(flipped, split="test")
    for m, model in enumerate(arrays.models):
        for q, question_id in enumerate(arrays.question_ids):
            answers = table[model][question_id]
            expected = [a == "A" for a in answers] + [False] * (
                arrays.codes.shape[2] - len(answers)
            )
            assert arrays.sample_correct[m, q].tolist() == expected


def test_subset_keeps_questions_and_sorts_models(arrays: SampleArrays) -> None:
    assert arrays.subset(["b", "a"]).models == ["a", "b"]
    sub = arrays.subset(["b"])
    assert sub.models == ["b"]
    assert sub.question_ids == arrays.question_ids
    np.testing.assert_array_equal(sub.codes[0], arrays.codes[1])
    np.testing.assert_array_equal(sub.recorded[0], arrays.recorded[1])
    with pytest.raises(InputError, match=r"unknown model 'c' \(have: a, b\)"):
        arrays.subset(["c"])


@pytest.mark.parametrize(
    ("models", "split", "error", "message"),
    [
        (["a", "x"], "test", InputError, "unknown model 'x' (store has: a, b)"),
        (["a"], "validation", StoreError, "no samples in split 'validation'"),
        (["a", "a"], "test", InputError, "model 'a' given twice"),
        ([], "test", InputError, "no models given"),
    ],
)
def test_bad_requests(models: list[str], split: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        SampleArrays.from_samples(samples_from_table(TABLE, REFERENCES), models=models, split=split)
    assert str(raised.value) == message


def test_model_missing_from_split_is_a_store_error() -> None:
    samples = samples_from_table({"a": {"q": ["1"]}}, {"q": "1"}, split="validation")
    samples += samples_from_table({"b": {"q": ["1"]}}, {"q": "1"}, split="test")
    with pytest.raises(StoreError, match=r"^model 'b' has no samples in split 'validation'$"):
        SampleArrays.from_samples(samples, models=["a", "b"], split="validation")


def test_no_common_question_is_a_store_error() -> None:
    samples = samples_from_table({"a": {"q1": ["1"]}, "b": {"q2": ["1"]}}, {"q1": "1", "q2": "1"})
    with pytest.raises(StoreError, match="no question in split 'test' has samples from every"):
        SampleArrays.from_samples(samples, split="test")


def test_question_with_two_tasks_is_a_store_error() -> None:
    samples = samples_from_table({"a": {"q": ["1"]}, "b": {"q": ["1"]}}, {"q": "1"})
    samples[1] = replace(samples[1], task="other")
    with pytest.raises(StoreError, match="question 'q' has samples of tasks 'exact', 'other'"):
        SampleArrays.from_samples(samples, split="test")


def test_require_samples_names_model_and_question(arrays: SampleArrays) -> None:
    with pytest.raises(StoreError) as raised:
        arrays.require_samples(2)
    assert str(raised.value) == "k=2 but model 'a' has only 1 samples for question 'q10'"
    with pytest.raises(InputError, match="k must be at least 1, got 0"):
        arrays.require_samples(0)


def test_validation_accuracy_is_the_mean_per_sample_accuracy() -> None:
    table, references = random_table(3, models=3, questions=20, samples=5, ragged=True)
    arrays = SampleArrays.from_samples(
        samples_from_table(table, references, split="validation"), split="validation"
    )
    expected = {
        model: float(np.mean([a == "A" for answers in rows.values() for a in answers]))
        for model, rows in table.items()
    }
    assert validation_accuracy(arrays) == pytest.approx(expected)


def test_validation_accuracy_refuses_test_arrays(arrays: SampleArrays) -> None:
    with pytest.raises(InputError, match="needs the validation split, got 'test'"):
        validation_accuracy(arrays)
