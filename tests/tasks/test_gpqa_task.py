"""The gpqa task: letter extraction, option prefixes and the seeded shuffle."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from slm_mux.tasks import Question, get_task
from slm_mux.tasks.gpqa import (
    LETTERS,
    GpqaTask,
    extract_letter,
    shuffle_seed,
    shuffled_question,
    strip_letter_prefixes,
)

TASK = GpqaTask()
OPTIONS = ["the right one", "wrong one", "wrong two", "wrong three"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Reasoning...\nThe answer is (B)", "B"),
        ("Answer: C", "C"),
        ("**Answer:** D", "D"),
        ("**Answer**: A", "A"),
        ("Answer: **C**", "C"),
        ("The correct answer is: (D).", "D"),
        ("So the final answer is option A.", "A"),
        ("answer is B because", "B"),
        (r"Thus $\boxed{A}$", "A"),
        (r"\boxed{(C)}", "C"),
        (r"\boxed{\text{D}}", "D"),
        ("(C) is correct.", "C"),
        ("Option B is the correct answer", "B"),
        ("Lots of thought.\n\nB", "B"),
        ("Lots of thought.\n**(D).**", "D"),
        # The most explicit phrasing wins over earlier or weaker ones.
        ("(A) is correct? No.\nAnswer: B", "B"),
        ("Answer: A\nOn reflection, \\boxed{C}", "C"),
        ("Answer: A\nWait. Answer: D", "D"),
        ("Answer: A\nWait. Answer: D\nNo. Answer: A", "A"),
        # SmolLM2-135M's replies that list the options (facts set, 2026-12-05): three or
        # more different letters stated as the answer are no answer.
        (
            "1. The answer is A) Saturn.\n2. The correct answer is C) Mercury.\n"
            "3. The answer is D) Neptune.",
            None,
        ),
        (
            "1. The answer is A) Beijing.\n2. The answer is B) Ottawa.\n3. The answer is C) "
            "Warsaw.\n4. The answer is D) Nairobi.\n\nThe answer is not a valid option.",
            None,
        ),
        ("(A) is incorrect and (B) is correct", "B"),
        # No letter: pronouns, words that start with a letter, options past D.
        ("The answer is Because of symmetry", None),
        ("I think it is A or B", None),
        ("Answer: E", None),
        ("", None),
    ],
)
def test_extract(text: str, expected: str | None) -> None:
    assert extract_letter(text) == expected
    assert TASK.extract(text) == expected


@pytest.mark.parametrize(
    ("answer", "form"),
    [("B", "B"), ("b", "B"), ("(c)", "C"), ("**D.**", "D"), (" A ", "A"), ("maybe", "MAYBE")],
)
def test_canonical(answer: str, form: str) -> None:
    assert TASK.canonical(answer) == form


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [("b", "B", True), ("(B)", "B", True), ("C", "B", False), (None, "B", False)],
)
def test_grade(answer: str | None, reference: str, correct: bool) -> None:
    assert TASK.grade(answer, reference) is correct


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["A 10^-8 eV\n", "B 10^-11 eV", "C x", "D y"], ["10^-8 eV", "10^-11 eV", "x", "y"]),
        (["(A) one", "(B) two"], ["one", "two"]),
        (["A. one", "B) two", "C: three"], ["one", "two", "three"]),
        # Not every option carries its own letter: leave them alone.
        (["A cat", "A dog"], ["A cat", "A dog"]),
        (["B one", "A two"], ["B one", "A two"]),
        (["one", "two"], ["one", "two"]),
    ],
)
def test_strip_letter_prefixes(options: list[str], expected: list[str]) -> None:
    assert strip_letter_prefixes(options) == expected


@pytest.mark.parametrize("question_id", ["0", "1", "rec42", "gpqa/7"])
def test_shuffle_is_deterministic_and_keeps_the_correct_text(question_id: str) -> None:
    question = shuffled_question(question_id, "Which?", OPTIONS, correct=0)
    assert question == shuffled_question(question_id, "Which?", OPTIONS, correct=0)
    assert sorted(question.choices) == sorted(OPTIONS)
    assert question.choices[LETTERS.index(question.reference)] == "the right one"
    other = shuffled_question(question_id, "Which?", OPTIONS, correct=2)
    assert other.choices == question.choices
    assert other.choices[LETTERS.index(other.reference)] == "wrong two"


def test_shuffle_varies_across_questions() -> None:
    orders = {shuffled_question(str(i), "Which?", OPTIONS, 0).choices for i in range(40)}
    references = {shuffled_question(str(i), "Which?", OPTIONS, 0).reference for i in range(40)}
    assert len(orders) > 10
    assert references == set(LETTERS)


def test_shuffle_seed_does_not_depend_on_the_hash_salt() -> None:
    code = "from slm_mux.tasks.gpqa import shuffle_seed; print(shuffle_seed('rec42'))"
    seeds = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": salt},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for salt in ("1", "2")
    }
    assert seeds == {str(shuffle_seed("rec42"))}


def test_shuffled_question_rejects_too_many_options() -> None:
    with pytest.raises(ValueError, match="2 to 4 options"):
        shuffled_question("q", "Which?", [*OPTIONS, "fifth"], 0)


def test_prompt_lists_lettered_options() -> None:
    question = Question("q", "Which one?", "B", ("red", "blue"))
    [message] = get_task("gpqa").messages(question)
    assert message["content"].startswith("Which one?")
    assert "A) red\nB) blue" in message["content"]
    assert "Answer: <letter>" in message["content"]
