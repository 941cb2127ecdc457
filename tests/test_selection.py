"""The selection rule (Algorithm 1) on hand-made tables."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pytest

from slm_mux.errors import InputError
from slm_mux.selection import NO_VOTE, decide, encode, majority, select, tie_break_rank

N = NO_VOTE


@pytest.mark.parametrize(
    ("codes", "code", "count"),
    [
        ([0, 0, 1], 0, 2),
        ([1, 0, 0], 0, 2),
        ([1, 0, 1, 0], 1, 2),  # tie: the answer that occurs first
        ([0, 1, 1, 0], 0, 2),
        ([N, 2, N], 2, 1),
        ([N, N, N], N, 0),
        ([3], 3, 1),
        ([N, 1, 0, 0, 1, 1], 1, 3),
    ],
)
def test_majority_table(codes: list[int], code: int, count: int) -> None:
    got_code, got_count = majority(codes)
    assert (int(got_code), int(got_count)) == (code, count)


def test_majority_keeps_leading_shape() -> None:
    codes = np.array([[[0, 0, 1], [1, 2, 2]], [[N, N, N], [4, 4, 4]]])
    code, count = majority(codes)
    assert code.tolist() == [[0, 2], [N, 4]]
    assert count.tolist() == [[2, 2], [0, 3]]


@pytest.mark.parametrize(
    ("accuracy", "rank"),
    [
        ([0.5, 0.9, 0.7], [2, 0, 1]),
        ([0.5, 0.5, 0.5], [0, 1, 2]),
        ([None, 0.1, None], [1, 0, 2]),
        ([None, None], [0, 1]),
    ],
)
def test_tie_break_rank(accuracy: list[float | None], rank: list[int]) -> None:
    assert tie_break_rank(accuracy).tolist() == rank


@pytest.mark.parametrize(
    ("codes", "k", "rank", "model", "code", "confidence"),
    [
        # The most confident model wins even when others agree with each other.
        ([[0, 1, 2], [3, 3, 3], [0, 0, 1]], None, None, 1, 3, 1.0),
        # Tie in confidence: given order by default ...
        ([[0, 0, 1], [2, 2, 1]], None, None, 0, 0, 2 / 3),
        # ... or the better validation rank.
        ([[0, 0, 1], [2, 2, 1]], None, [1, 0], 1, 2, 2 / 3),
        # Empty samples count in k: 2 votes of 4 ties 2 of 4, rank decides.
        ([[0, 0, N, N], [1, 1, 2, 3]], None, [1, 0], 1, 1, 0.5),
        # k asked larger than the samples that came back lowers confidence.
        ([[5, 5]], 4, None, 0, 5, 0.5),
        # Nobody answered: no winner.
        ([[N, N], [N, N]], None, None, -1, N, 0.0),
        # A model with no vote never wins, even when ranked first.
        ([[N, N], [1, 2]], None, [0, 1], 1, 1, 0.5),
    ],
)
def test_select_table(
    codes: list[list[int]],
    k: int | None,
    rank: list[int] | None,
    model: int,
    code: int,
    confidence: float,
) -> None:
    chosen = select(np.array(codes), k=k, rank=rank)
    assert int(chosen.model) == model
    assert int(chosen.code) == code
    assert float(chosen.confidence) == pytest.approx(confidence)


def test_select_vectorized_matches_one_question_at_a_time() -> None:
    rng = np.random.default_rng(7)
    codes = rng.integers(-1, 4, size=(4, 50, 5))
    rank = np.array([2, 0, 3, 1])
    together = select(codes, rank=rank)
    for q in range(codes.shape[1]):
        alone = select(codes[:, q, :], rank=rank)
        assert int(alone.model) == together.model[q]
        assert int(alone.code) == together.code[q]


def test_select_rejects_non_positive_k() -> None:
    with pytest.raises(ValueError, match="k must be positive"):
        select(np.zeros((1, 1)), k=0)


def _same_number(answers: Sequence[str]) -> list[int]:
    """Classes of equal rational numbers, numbered by first appearance."""
    seen: dict[Fraction, int] = {}
    return [seen.setdefault(Fraction(a), len(seen)) for a in answers]


def test_encode_groups_equivalent_answers_and_pads() -> None:
    codes, representative = encode([["1/2", "0.5", None], ["7"]], _same_number)
    assert codes.tolist() == [[0, 0, N], [1, N, N]]
    assert representative == ["1/2", "7"]


def test_decide_reports_winner_votes_and_own_answer() -> None:
    decision = decide(
        {"a": ["3", "4", "5"], "b": ["0.5", "1/2", None]},
        _same_number,
        k=3,
        validation_accuracy={"a": 0.9, "b": 0.1},
    )
    assert decision.model == "b"
    assert decision.answer == "0.5"  # b's own first answer in the winning class
    assert decision.confidence == pytest.approx(2 / 3)
    assert decision.votes == {"a": {"3": 1, "4": 1, "5": 1}, "b": {"0.5": 2}}


def test_decide_tie_goes_to_validation_accuracy() -> None:
    answers = {"a": ["1", "1", "2"], "b": ["3", "3", "2"]}
    assert decide(answers, _same_number).model == "a"
    assert decide(answers, _same_number, validation_accuracy={"a": 0.2, "b": 0.6}).model == "b"


def test_decide_with_no_answers() -> None:
    decision = decide({"a": [None, ""], "b": []}, _same_number, k=2)
    assert decision.answer is None
    assert decision.model is None
    assert decision.votes == {"a": {}, "b": {}}


def test_select_with_a_k_per_model() -> None:
    # 2 of 3 asked beats 2 of 4 asked; 1 of 2 ties 2 of 4 and rank decides.
    codes = np.array([[0, 0, N, N], [1, 1, 2, N], [3, N, N, N]])
    assert int(select(codes, k=[4, 3, 2]).model) == 1
    assert int(select(codes[[0, 2]], k=[4, 2], rank=[1, 0]).model) == 1
    assert int(select(codes[[0, 2]], k=[4, 2]).model) == 0


def test_decide_with_a_k_per_model() -> None:
    answers: dict[str, list[str | None]] = {"a": ["1", "1", None, None], "b": ["2", "2", "3"]}
    decision = decide(answers, _same_number, k={"a": 4, "b": 3})
    assert decision.model == "b"
    assert decision.confidence == pytest.approx(2 / 3)


def test_decide_rejects_no_models_and_a_missing_k() -> None:
    with pytest.raises(InputError, match="at least one model"):
        decide({}, _same_number)
    with pytest.raises(InputError, match="no k given for model 'b'"):
        decide({"a": ["1"], "b": ["2"]}, _same_number, k={"a": 1})
