"""Model-selection search: against a plain brute force, ties, beam search and test accuracy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import combinations

import pytest

from slm_mux.analysis.arrays import SampleArrays
from slm_mux.analysis.evaluate import SLM_MUX, evaluate
from slm_mux.analysis.search import SearchResult, search, with_test_accuracy
from slm_mux.errors import InputError, StoreError

from .builders import Table, random_table, samples_from_table


def brute_force(
    table: Table, references: dict[str, str], *, k: int, lam: float
) -> dict[int, tuple[tuple[str, ...], float, float, float]]:
    """Best (models, objective, union, contradiction) per size, trying every subset."""

    def majority(answers: Sequence[str | None]) -> str | None:
        counts = Counter(a for a in answers if a)
        return next((a for a in answers if a and counts[a] == max(counts.values())), None)

    questions = list(references)
    correct = {
        model: {q for q in questions if majority(rows[q][:k]) == references[q]}
        for model, rows in table.items()
    }
    wrong = {
        model: {
            q
            for q in questions
            if len(set(rows[q][:k])) == 1 and rows[q][0] and rows[q][0] != references[q]
        }
        for model, rows in table.items()
    }
    best = {}
    for size in range(1, len(table) + 1):
        top = None
        for subset in combinations(sorted(table), size):  # lexicographic order
            union = set().union(*(correct[m] for m in subset))
            against = {q for q in union if any(q in wrong[m] for m in subset)}
            key = (len(union) - lam * len(against), len(union))
            if top is None or key > top[0]:
                top = (key, subset, len(union), len(against))
        assert top is not None
        (score, _), subset, union_count, against_count = top
        n = len(questions)
        best[size] = (subset, score / n, union_count / n, against_count / n)
    return best


Best = dict[int, tuple[tuple[str, ...], float, float, float]]


def rounded(best: Best) -> Best:
    """Scores rounded to 12 places, so float noise cannot hide or fake a difference."""
    return {
        size: (models, *(round(x, 12) for x in scores))  # type: ignore[misc]
        for size, (models, *scores) in best.items()
    }


def as_tuples(result: SearchResult) -> Best:
    return rounded(
        {
            size: (s.models, s.objective, s.union_accuracy, s.contradiction)
            for size, s in result.best.items()
        }
    )


def validation_arrays(table: Table, references: dict[str, str]) -> SampleArrays:
    samples = samples_from_table(table, references, split="validation")
    return SampleArrays.from_samples(samples, split="validation")


def pool(seed: int, models: int) -> tuple[Table, dict[str, str]]:
    """A random pool with copies of models, so that many subsets tie."""
    table, references = random_table(seed, models=models, questions=12, samples=3)
    table["z-copy"] = table["m0"]
    table["a-copy"] = table["m1"]
    return table, references


@pytest.mark.parametrize("lam", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_exhaustive_search_matches_brute_force(seed: int, lam: float) -> None:
    table, references = pool(seed, 5)
    arrays = validation_arrays(table, references)
    result = search(arrays, k=3, max_models=len(table), lam=lam)
    assert result.exact
    assert as_tuples(result) == rounded(brute_force(table, references, k=3, lam=lam))


@pytest.mark.parametrize("seed", [5, 6])
def test_search_on_fewer_samples_than_recorded(seed: int) -> None:
    table, references = pool(seed, 4)
    arrays = validation_arrays(table, references)
    result = search(arrays, k=2, max_models=3)
    assert sorted(result.best) == [1, 2, 3]
    expected = brute_force(table, references, k=2, lam=1.0)
    assert as_tuples(result) == rounded({size: expected[size] for size in (1, 2, 3)})


@pytest.mark.parametrize("seed", [0, 7])
def test_beam_search_is_labelled_approximate_and_finds_small_pool_optimum(seed: int) -> None:
    table, references = pool(seed, 5)  # 7 models: the beam holds every subset of a size
    arrays = validation_arrays(table, references)
    result = search(arrays, k=3, max_models=7, exact_limit=0)
    assert not result.exact
    assert as_tuples(result) == rounded(brute_force(table, references, k=3, lam=1.0))


def test_contradiction_penalizes_a_confidently_wrong_partner() -> None:
    table: Table = {
        "good": {"q1": ["x", "x"], "q2": ["y", "n"], "q3": ["n", "m"]},
        "stubborn": {"q1": ["w", "w"], "q2": ["w", "w"], "q3": ["z", "z"]},
        "unsure": {"q1": ["x", "n"], "q2": ["m", "n"], "q3": ["z", "p"]},
    }
    references = {"q1": "x", "q2": "y", "q3": "z"}
    arrays = validation_arrays(table, references)
    result = search(arrays, k=2, max_models=2)
    # good+unsure covers q1, q2 and q3 with no contradiction; stubborn is wrong
    # everywhere and contradicts good on q1 and q2.
    assert result.best[2].models == ("good", "unsure")
    assert result.best[2].union_accuracy == 1.0
    assert result.best[2].contradiction == 0.0
    assert result.best[1].models == ("good",)
    assert result.best[1].objective == pytest.approx(2 / 3)
    assert as_tuples(result) == rounded(
        {s: v for s, v in brute_force(table, references, k=2, lam=1.0).items() if s <= 2}
    )


def test_equal_objectives_go_to_higher_union_then_smaller_names() -> None:
    unsure, right = ["x", "y"], ["r", "r"]
    table: Table = {
        "a": {"q1": right, "q2": unsure, "q3": unsure, "q4": unsure},
        "b": {"q1": unsure, "q2": right, "q3": unsure, "q4": unsure},
        "c": {"q1": unsure, "q2": unsure, "q3": right, "q4": ["w", "w"]},
        "d": {"q1": right, "q2": ["w", "w"], "q3": unsure, "q4": right},
    }
    result = search(
        validation_arrays(table, dict.fromkeys(("q1", "q2", "q3", "q4"), "r")), k=2, max_models=2
    )
    # Every pair scores 2/4; {b, d} and {c, d} cover three questions, {b, d} sorts first.
    assert result.best[2].models == ("b", "d")
    assert (result.best[2].union_accuracy, result.best[2].contradiction) == (0.75, 0.25)
    assert result.best[1].models == ("d",)


def test_with_test_accuracy_evaluates_each_subset() -> None:
    table, references = random_table(9, models=4, questions=30, samples=4)
    validation = validation_arrays(table, references)
    test = SampleArrays.from_samples(samples_from_table(table, references), split="test")
    accuracy = {"m0": 0.1, "m1": 0.9, "m2": 0.5, "m3": 0.3}
    result = with_test_accuracy(
        search(validation, k=2, max_models=4),
        test,
        k=2,
        trials=5,
        seed=4,
        validation_accuracy=accuracy,
    )
    for score in result.best.values():
        expected = evaluate(
            test.subset(score.models), k=2, trials=5, seed=4, validation_accuracy=accuracy
        )
        assert score.test_accuracy == expected.methods[SLM_MUX].accuracy
    data = result.to_json()
    assert list(data["best"]) == ["1", "2", "3", "4"]
    assert data["best"]["1"].keys() == {
        "models",
        "objective",
        "union_accuracy",
        "contradiction",
        "test_accuracy",
    }
    assert (data["exact"], data["lambda"], data["k"]) == (True, 1.0, 2)


def test_bad_arguments() -> None:
    table, references = random_table(1, models=2, questions=3, samples=2)
    arrays = validation_arrays(table, references)
    with pytest.raises(InputError, match="max_models must be at least 1, got 0"):
        search(arrays, k=2, max_models=0)
    with pytest.raises(StoreError, match="k=3 but model 'm0' has only 2 samples for question"):
        search(arrays, k=3, max_models=2)
    assert sorted(search(arrays, k=2, max_models=5).best) == [1, 2]
