"""Offline evaluation: each method on hand-made cases, tie-breaks, draws and errors."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from slm_mux.analysis.arrays import SampleArrays
from slm_mux.analysis.evaluate import (
    AGENT_FOREST,
    ORACLE,
    SLM_MUX,
    Score,
    evaluate,
    self_consistency,
    single,
)
from slm_mux.errors import InputError, StoreError
from slm_mux.methods import Ballot, offline_methods
from slm_mux.selection import decide
from slm_mux.tasks import get_task

from .builders import Table, random_table, samples_from_table


def arrays_of(table: Table, references: dict[str, str]) -> SampleArrays:
    return SampleArrays.from_samples(samples_from_table(table, references), split="test")


def accuracies(table: Table, references: dict[str, str], **options: object) -> dict[str, float]:
    arrays = arrays_of(table, references)
    k = int(arrays.recorded.max())
    result = evaluate(arrays, k=k, trials=3, seed=0, **options)  # type: ignore[arg-type]
    return {str(method): score.accuracy for method, score in result.methods.items()}


def test_agent_forest_and_slm_mux_disagree() -> None:
    # a is sure of the right answer; b and c together outvote it with a wrong one.
    table: Table = {
        "a": {"q1": ["x", "x", "x"], "q2": ["u", "v", "w"]},
        "b": {"q1": ["y", "y", "w"], "q2": ["t", "t", "s"]},
        "c": {"q1": ["y", "y", "v"], "q2": ["s", "t", "s"]},
    }
    got = accuracies(table, {"q1": "x", "q2": "t"})
    assert got == {
        "slm-mux": 1.0,  # q1: a (3/3) wins; q2: b and c tie at 2/3, b is first: t
        "agent-forest": 0.5,  # q1: y has 4 votes; q2: t and s have 3 each, t comes first
        "single:a": 0.5,
        "single:b": pytest.approx(2 / 6),
        "single:c": pytest.approx(1 / 6),
        "sc:a": 0.5,
        "sc:b": 0.5,
        "sc:c": 0.0,
        "oracle": 1.0,
    }


TIE: Table = {"a": {"q": ["x", "x", "y"]}, "b": {"q": ["y", "y", "x"]}}


@pytest.mark.parametrize(
    ("validation_accuracy", "expected"),
    [
        (None, 1.0),  # no accuracy: the name that sorts first, a
        ({"a": 0.9, "b": 0.1}, 1.0),
        ({"a": 0.1, "b": 0.9}, 0.0),
        ({"b": 0.5}, 0.0),  # a model of unknown accuracy ranks last
        ({"a": 0.5, "b": 0.5}, 1.0),  # equal accuracy: given order
    ],
)
def test_confidence_ties_go_to_validation_accuracy(
    validation_accuracy: dict[str, float] | None, expected: float
) -> None:
    got = accuracies(TIE, {"q": "x"}, validation_accuracy=validation_accuracy)
    assert got["slm-mux"] == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_equal_to_recorded_uses_recorded_order(seed: int) -> None:
    # Each model's two answers tie; in recorded order the first one wins.
    arrays = arrays_of({"a": {"q": ["x", "y"]}, "b": {"q": ["z", "x"]}}, {"q": "x"})
    result = evaluate(arrays, k=2, trials=20, seed=seed, validation_accuracy=None)
    assert result.methods[self_consistency("a")].accuracy == 1.0
    assert result.methods[self_consistency("b")].accuracy == 0.0
    assert result.methods[SLM_MUX].accuracy == 1.0
    assert all(score.std == 0.0 for score in result.methods.values())
    assert result.trials == 20


def test_drawing_fewer_samples_varies_and_is_seeded() -> None:
    table, references = random_table(5, models=3, questions=40, samples=6)
    arrays = arrays_of(table, references)
    first = evaluate(arrays, k=3, trials=8, seed=11, validation_accuracy=None)
    again = evaluate(arrays, k=3, trials=8, seed=11, validation_accuracy=None)
    assert first.to_json() == again.to_json()
    assert first.methods[SLM_MUX].std > 0
    others = [evaluate(arrays, k=3, trials=8, seed=s, validation_accuracy=None) for s in (12, 13)]
    assert any(other.to_json() != first.to_json() for other in others)


def test_draws_are_uniform_over_recorded_samples() -> None:
    # Per-sample accuracy of the drawn samples is unbiased for any k.
    table, references = random_table(8, models=2, questions=30, samples=5, ragged=True)
    arrays = arrays_of(table, references)
    k = int(arrays.recorded.min())
    result = evaluate(arrays, k=k, trials=3000, seed=1, validation_accuracy=None)
    for model, rows in table.items():
        expected = np.mean([np.mean([a == "A" for a in answers]) for answers in rows.values()])
        assert result.methods[single(model)].accuracy == pytest.approx(expected, abs=0.01)


def test_model_with_exactly_k_samples_always_uses_all() -> None:
    table: Table = {"a": {"q": ["x", "y"]}, "b": {"q": ["x", "y", "y", "x"]}}
    result = evaluate(arrays_of(table, {"q": "x"}), k=2, trials=50, seed=3)
    assert result.methods[single("a")] == Score(accuracy=0.5, std=0.0)
    assert result.methods[self_consistency("a")].accuracy == 1.0  # x then y: x occurs first
    assert result.methods[self_consistency("b")].std > 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_all_recorded_samples_match_per_question_reference(seed: int) -> None:
    table, references = random_table(seed, models=4, questions=25, samples=3)
    validation = {f"m{m}": float(v) for m, v in enumerate(np.random.default_rng(seed).random(4))}
    arrays = arrays_of(table, references)
    result = evaluate(arrays, k=3, trials=2, seed=0, validation_accuracy=validation)
    task = get_task("exact")
    mux, forest = [], []
    for question_id, reference in references.items():
        answers = {model: rows[question_id] for model, rows in table.items()}
        decision = decide(answers, task.cluster, k=3, validation_accuracy=validation)
        mux.append(decision.answer == reference)
        pooled = [a for model in table for a in answers[model] if a]
        counts = Counter(pooled)
        top = next((a for a in pooled if counts[a] == max(counts.values())), None)
        forest.append(top == reference)
    assert result.methods[SLM_MUX].accuracy == pytest.approx(np.mean(mux))
    assert result.methods[AGENT_FOREST].accuracy == pytest.approx(np.mean(forest))
    assert result.methods[ORACLE].accuracy >= result.methods[SLM_MUX].accuracy


def test_attribution_and_first_trial() -> None:
    table: Table = {
        "a": {"q1": ["x", "x"], "q2": [None, None], "q3": ["p", "q"]},
        "b": {"q1": ["y", "z"], "q2": [None, ""], "q3": ["q", "q"]},
    }
    arrays = arrays_of(table, {"q1": "x", "q2": "n", "q3": "p"})
    result = evaluate(arrays, k=2, trials=1, seed=0)
    assert result.model_share == pytest.approx({"a": 1 / 3, "b": 1 / 3})
    assert result.no_answer_share == pytest.approx(1 / 3)
    assert [
        (o.question_id, o.model, o.answer, o.confidence, o.correct) for o in result.first_trial
    ] == [
        ("q1", "a", "x", 1.0, True),
        ("q2", None, None, 0.0, False),
        ("q3", "b", "q", 1.0, False),
    ]


def test_imported_verdicts_cannot_split_single_from_self_consistency() -> None:
    # Stored verdicts say the opposite of the grader; every method follows the grader.
    table, references = random_table(6, models=3, questions=30, samples=4)
    samples = [
        replace(s, correct=s.answer != references[s.question_id])
        for s in samples_from_table(table, references)
    ]
    arrays = SampleArrays.from_samples(samples, split="test")
    drawn_one = evaluate(arrays, k=1, trials=7, seed=5).methods
    for model, rows in table.items():
        assert drawn_one[single(model)] == drawn_one[self_consistency(model)]
        alone = evaluate(arrays.subset([model]), k=1, trials=7, seed=5).methods
        assert alone[SLM_MUX] == alone[self_consistency(model)] == alone[single(model)]
        every_sample = evaluate(arrays, k=4, trials=1, seed=0).methods[single(model)]
        hits = sum(a == "A" for answers in rows.values() for a in answers)
        assert every_sample.accuracy == pytest.approx(hits / (30 * 4))


@pytest.mark.parametrize(
    ("k", "trials", "header", "passes"),
    [
        (3, 4, "1 test questions, k=3, 1 pass (all recorded samples)\n", 1),
        (2, 4, "1 test questions, k=2, 4 trials, seed 0\n", 4),
        (1, 1, "1 test questions, k=1, 1 trial, seed 0\n", 1),
    ],
)
def test_header_says_one_pass_when_all_samples_are_used(
    k: int, trials: int, header: str, passes: int
) -> None:
    result = evaluate(arrays_of(TIE, {"q": "x"}), k=k, trials=trials, seed=0)
    assert result.to_markdown().startswith(header)
    data = result.to_json()
    assert (data["trials"], data["passes"], data["all_recorded"]) == (trials, passes, k == 3)


def test_json_shape() -> None:
    arrays = arrays_of(TIE, {"q": "x"})
    data = evaluate(arrays, k=2, trials=4, seed=0).to_json()
    assert {"questions", "k", "trials", "passes", "methods", "attribution"} <= set(data)
    assert list(data["methods"]) == [
        "slm-mux",
        "agent-forest",
        "single:a",
        "single:b",
        "sc:a",
        "sc:b",
        "oracle",
    ]
    assert data["methods"]["slm-mux"].keys() == {"accuracy", "std"}
    assert (data["questions"], data["k"], data["trials"]) == (1, 2, 4)


def test_too_large_k_names_model_and_question() -> None:
    table: Table = {
        "a": {"q1": ["x"] * 9, "q17": ["x"] * 3},
        "b": {"q1": ["x"] * 9, "q17": ["x"] * 9},
    }
    with pytest.raises(StoreError) as raised:
        evaluate(arrays_of(table, {"q1": "x", "q17": "x"}), k=9, trials=1, seed=0)
    assert str(raised.value) == "k=9 but model 'a' has only 3 samples for question 'q17'"


def test_trials_must_be_positive() -> None:
    with pytest.raises(InputError, match="trials must be at least 1, got 0"):
        evaluate(arrays_of(TIE, {"q": "x"}), k=1, trials=0, seed=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_vectorised_scores_equal_the_registered_votes_question_by_question(seed: int) -> None:
    table, references = random_table(seed, models=4, questions=25, samples=3)
    result = evaluate(arrays_of(table, references), k=3, trials=1, seed=0)
    task = get_task("exact")
    models = sorted(table)
    expected: dict[str, float] = {}
    for spec in offline_methods():
        assert spec.vote is not None
        readers = models if spec.offline == "per-model" else [models[0]]
        for reader in readers:
            scores = [
                spec.vote(
                    Ballot(
                        {m: table[m][qid] for m in models},
                        task,
                        dict.fromkeys(models, 3),
                        {},
                        reader,
                        reference,
                    )
                ).score(task, reference)
                for qid, reference in references.items()
            ]
            name = spec.name if spec.offline == "pool" else f"{spec.name}:{reader}"
            expected[name] = sum(scores) / len(scores)
    got = {str(method): score.accuracy for method, score in result.methods.items()}
    assert got == pytest.approx(expected)
