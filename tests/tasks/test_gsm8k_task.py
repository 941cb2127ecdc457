"""The gsm8k task: the ``#### N`` line or the last number, compared by value."""

from __future__ import annotations

import pytest

from slm_mux.tasks import Question, get_task
from slm_mux.tasks.gsm8k import Gsm8kTask, last_number, plain_decimal

TASK = Gsm8kTask()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 + 4 = 7\n#### 7", "7"),
        ("#### 5\nlater I say 6", "5"),
        ("first #### 1\nthen\n#### 2", "2"),
        ("#### $1,000.", "$1,000"),
        ("#### -3", "-3"),
        ("#### about .5 cups", ".5"),
        ("#### none\nbut 12 apples", "12"),
        ("She has 12 apples, then 15.", "15"),
        ("It costs $1,234.50 in total", "$1,234.50"),
        ("20-5 = 15", "15"),
        ("so 8-3", "3"),
        ("The result is -7 degrees", "-7"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract(text: str, expected: str | None) -> None:
    assert TASK.extract(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5, 6", "6"), ("1,000,000 people", "1,000,000"), ("v2 has 3", "3"), ("x", None)],
)
def test_last_number(text: str, expected: str | None) -> None:
    assert last_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1000", "1000"),
        ("1000.0", "1000"),
        ("007", "7"),
        (".5", "0.5"),
        ("-0.50", "-0.5"),
        ("-0", "0"),
        ("7.", "7"),
        ("123456789012345678901234567890.10", "123456789012345678901234567890.1"),
        ("1e3", None),
        ("-", None),
        (".", None),
        ("1,000", None),
    ],
)
def test_plain_decimal(text: str, expected: str | None) -> None:
    assert plain_decimal(text) == expected


@pytest.mark.parametrize(
    ("answer", "form"),
    [
        ("1,000", "1000"),
        ("$1,000", "1000"),
        ("1000.0", "1000"),
        (" 1 000 ", "1000"),
        (".5", "0.5"),
        ("-3", "-3"),
        ("12.", "12"),
        ("Twelve", "twelve"),
    ],
)
def test_canonical(answer: str, form: str) -> None:
    assert TASK.canonical(answer) == form


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [
        ("1,000", "1000", True),
        ("$1,000", "1000", True),
        ("1000.00", "1000", True),
        ("0.5", ".5", True),
        ("-3", "-3", True),
        ("3", "-3", False),
        ("1001", "1000", False),
        ("100", "1000", False),
        ("", "5", False),
        (None, "5", False),
    ],
)
def test_grade(answer: str | None, reference: str, correct: bool) -> None:
    assert TASK.grade(answer, reference) is correct


def test_cluster() -> None:
    assert TASK.cluster(["1,000", "1000.0", "$1000", "999", "1000"]) == [0, 0, 0, 1, 0]


def test_prompt_asks_for_a_final_marker_line() -> None:
    [message] = get_task("gsm8k").messages(Question("0", "How many?", "3"))
    assert message["content"].startswith("How many?")
    assert "#### <number>" in message["content"]


@pytest.mark.parametrize(
    ("reply", "answer"),
    [  # Gemma 3 270M base and SmolLM2-135M-Instruct on one-step word problems (in process)
        ("1.  ", None),  # a list begun and cut at its stop: no answer, not "1"
        ("1. ", None),
        ("1.  The number of stamps Carla has is 3.", "3"),
        (
            "1. Gus has 10 books.\n2. Eli gives Gus 4 more.\n3. So, Gus now has 10 + 4 = 14 books.",
            "14",
        ),
        ("1. First, find the total number of stickers.\n2. Then, find", None),
        ("The answer is:\n18.", "18"),
        ("a) Carla has 12 shells.", "12"),
    ],
)
def test_list_item_numbers_are_not_answers(reply: str, answer: str | None) -> None:
    assert Gsm8kTask().extract(reply) == answer
