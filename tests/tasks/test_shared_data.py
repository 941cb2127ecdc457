"""Every reference answer of the shared benchmark files grades correct against itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm_mux.tasks import get_task
from slm_mux.tasks import math as math_module
from slm_mux.tasks.data import load_questions
from slm_mux.tasks.gpqa import LETTERS, strip_letter_prefixes
from slm_mux.tasks.math import math_verify_equal

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def data_file(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"shared benchmark data not found at {path} (expected beside the repo root)")
    return path


def test_math_references_grade_correct_after_boxing_and_extraction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = get_task("math")
    questions = load_questions("math", data_file("math_500.json"))
    assert len(questions) == 500
    asked: list[tuple[str, str]] = []

    def counted(gold: str, pred: str, *, both_ways: bool, seconds: float) -> bool:
        asked.append((gold, pred))
        return math_verify_equal(gold, pred, both_ways=both_ways, seconds=seconds)

    monkeypatch.setattr(math_module, "math_verify_equal", counted)
    wrong = [
        q.id
        for q in questions
        if not task.grade(
            task.extract(f"So the answer is $\\boxed{{{q.reference}}}$."), q.reference
        )
    ]
    assert wrong == []
    assert asked == []  # the cheap normal form settles every self-match: math-verify is not run


def test_math_references_also_pass_math_verify_itself() -> None:
    """The normal form catches self-matches; math-verify must agree where it is asked."""
    questions = load_questions("math", data_file("math_500.json"))
    wrong = [
        q.id
        for q in questions
        if not math_verify_equal(q.reference, q.reference, both_ways=False, seconds=5.0)
    ]
    assert wrong == []


def test_gsm8k_references_grade_correct() -> None:
    task = get_task("gsm8k")
    questions = load_questions("gsm8k", data_file("gsm8k_500.json"))
    assert len(questions) == 500
    responses = {
        "marker": "Some work with 12 and 7.\n#### {}",
        "last number": "Adding it all up gives {} in total.",
    }
    for response in responses.values():
        wrong = [
            q.id
            for q in questions
            if not task.grade(task.extract(response.format(q.reference)), q.reference)
        ]
        assert wrong == []


def test_gpqa_references_grade_correct_and_point_at_the_correct_text() -> None:
    task = get_task("gpqa")
    path = data_file("gpqa_shuffled.json")
    questions = load_questions("gpqa", path)
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert len(questions) == len(rows) == 198
    for question, row in zip(questions, rows, strict=True):
        options = strip_letter_prefixes(row["choices"])
        correct_text = options[LETTERS.index(row["answer"])]
        assert question.choices[LETTERS.index(question.reference)] == correct_text
        assert sorted(question.choices) == sorted(options)
        assert task.grade(
            task.extract(f"Thinking.\nAnswer: {question.reference}"), question.reference
        )
    assert load_questions("gpqa", path) == questions
    assert {q.reference for q in questions} == set(LETTERS)
