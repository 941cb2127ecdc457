"""Question files (each task's layout, JSON or JSONL), custom JSONL sets and the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slm_mux.errors import FormatError, InputError
from slm_mux.tasks import Question, get_task, task_names
from slm_mux.tasks.base import question_hash
from slm_mux.tasks.custom import load_custom
from slm_mux.tasks.data import load_questions
from slm_mux.tasks.exact import ExactTask
from slm_mux.tasks.gpqa import LETTERS, GpqaTask, shuffled_question
from slm_mux.tasks.gsm8k import Gsm8kTask
from slm_mux.tasks.math import MathTask


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_json(path: Path, rows: list[Any]) -> Path:
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


# ------------------------------------------------------------------ registry


@pytest.mark.parametrize(
    ("name", "kind"),
    [("exact", ExactTask), ("math", MathTask), ("gsm8k", Gsm8kTask), ("gpqa", GpqaTask)],
)
def test_get_task(name: str, kind: type) -> None:
    task = get_task(name)
    assert isinstance(task, kind)
    assert task.name == name
    assert name in task_names()


def test_unknown_task_names_the_choices() -> None:
    with pytest.raises(InputError, match=r"unknown task 'nope'; choose from .*math"):
        get_task("nope")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("work\nAnswer: 42", "42"),
        ("**Answer:** Paris", "Paris"),
        ("Final answer: blue whale.", "blue whale."),
        ("Answer: 1\nAnswer: 2", "2"),
        ("Answer:\n  Paris\n", "Paris"),
        ("Answer:", None),
        ("just a line\nlast line", "last line"),
        ("", None),
    ],
)
def test_exact_extract(text: str, expected: str | None) -> None:
    assert ExactTask().extract(text) == expected


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [("New  York", "New York", True), (" a\tb ", "a b", True), ("new york", "New York", False)],
)
def test_exact_grade(answer: str, reference: str, correct: bool) -> None:
    assert ExactTask().grade(answer, reference) is correct


# ------------------------------------------------------------ load_questions

MATH_ROWS = [
    {"problem": "1+1?", "answer": "2", "unique_id": "test/a/1.json"},
    {"problem": "Half?", "solution": r"It is $\boxed{\frac{1}{2}}$."},
]


@pytest.mark.parametrize("write", [write_json, write_jsonl])
def test_math_layout(tmp_path: Path, write: Any) -> None:
    path = write(tmp_path / "math.data", MATH_ROWS)
    assert load_questions("math", path) == [
        Question("test/a/1.json", "1+1?", "2"),
        Question(question_hash("Half?"), "Half?", r"\frac{1}{2}"),
    ]


def test_gsm8k_layout(tmp_path: Path) -> None:
    rows = [
        {"question": "How many?", "answer": "2+3=5\n#### 1,005"},
        {"question": "And now?", "answer": 7, "id": "g7"},
    ]
    path = write_jsonl(tmp_path / "gsm8k.jsonl", rows)
    assert load_questions("gsm8k", path) == [
        Question(question_hash("How many?"), "How many?", "1005"),
        Question("g7", "And now?", "7"),
    ]


def test_gpqa_shared_layout(tmp_path: Path) -> None:
    rows = [{"question": "Which?\n", "choices": ["A x\n", "B y", "C z", "D w"], "answer": "C"}]
    [question] = load_questions("gpqa", write_json(tmp_path / "gpqa.json", rows))
    expected_id = question_hash("Which?\nx\ny\nz\nw")
    assert question == shuffled_question(expected_id, "Which?", ["x", "y", "z", "w"], 2)
    assert question.choices[LETTERS.index(question.reference)] == "z"


def test_gpqa_original_layout(tmp_path: Path) -> None:
    row = {
        "Record ID": "rec1",
        "Question": "Which?",
        "Correct Answer": " right ",
        "Incorrect Answer 1": "w1",
        "Incorrect Answer 2": "w2",
        "Incorrect Answer 3": "w3",
    }
    [question] = load_questions("gpqa", write_jsonl(tmp_path / "gpqa.jsonl", [row]))
    assert question.id == "rec1"
    assert sorted(question.choices) == ["right", "w1", "w2", "w3"]
    assert question.choices[LETTERS.index(question.reference)] == "right"


def test_generic_layout(tmp_path: Path) -> None:
    rows = [
        {"question": "Capital?", "reference": "Paris", "id": 3},
        {"question": "Q", "answer": 1.5},
    ]
    assert load_questions("exact", write_jsonl(tmp_path / "q.jsonl", rows)) == [
        Question("3", "Capital?", "Paris"),
        Question(question_hash("Q"), "Q", "1.5"),
    ]


ID_LESS_ROWS: dict[str, list[dict[str, Any]]] = {
    "math": [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": "4"}],
    "gsm8k": [{"question": "One?", "answer": "#### 1"}, {"question": "Two?", "answer": "#### 2"}],
    "gpqa": [
        {"question": "Which?", "choices": ["x", "y"], "answer": "A"},
        {"question": "Which?", "choices": ["x", "z"], "answer": "A"},
    ],
    "exact": [{"question": "Capital?", "answer": "Paris"}, {"question": "Sea?", "answer": "Red"}],
}


@pytest.mark.parametrize("task", sorted(ID_LESS_ROWS))
def test_records_without_ids_are_named_by_their_text(tmp_path: Path, task: str) -> None:
    rows = ID_LESS_ROWS[task]
    forward = load_questions(task, write_jsonl(tmp_path / "forward.jsonl", rows))
    backward = load_questions(task, write_json(tmp_path / "backward.json", rows[::-1]))
    assert backward == forward[::-1]  # the id follows the question, not its position
    assert len({q.id for q in forward}) == 2  # gpqa: same stem, other options, other id
    assert all(len(q.id) == 12 for q in forward)
    key = "problem" if task == "math" else "question"
    padded = [{**row, key: f"  {row[key]}\n"} for row in rows]
    reread = load_questions(task, write_jsonl(tmp_path / "padded.jsonl", padded))
    assert [q.id for q in reread] == [q.id for q in forward]  # surrounding space ignored


@pytest.mark.parametrize(
    ("task", "rows", "message"),
    [
        (
            "gsm8k",
            [{"question": "Q", "answer": "#### 1"}, {"question": " Q ", "answer": "#### 2"}],
            r"questions\.jsonl:2: same question as line 1 and no 'id' to tell them apart",
        ),
        (
            "math",
            [
                {"problem": "P", "answer": "1"},
                {"problem": "x", "answer": "1"},
                {"problem": "P", "answer": "1"},
            ],
            r":3: same question as line 1 and no 'unique_id' to tell them apart",
        ),
        (
            "gpqa",
            [{"question": "Q", "choices": ["a", "b"], "answer": "A"}] * 2,
            r":2: same question as line 1 and no 'id' or 'Record ID' to tell them apart",
        ),
        (
            "exact",
            [
                {"question": "Q", "answer": "1", "id": "a"},
                {"question": "P", "answer": "1", "id": "a"},
            ],
            r":2: duplicate id 'a' \(first at line 1\)",
        ),
    ],
)
def test_repeated_questions_and_ids_are_refused(
    tmp_path: Path, task: str, rows: list[Any], message: str
) -> None:
    path = write_jsonl(tmp_path / "questions.jsonl", rows)
    with pytest.raises(FormatError, match=message):
        load_questions(task, path)


def test_repeated_question_in_a_json_array_names_both_items(tmp_path: Path) -> None:
    rows = [{"question": "Q", "answer": "1"}, {"question": "Q", "answer": "1"}]
    with pytest.raises(FormatError, match=r"q\.json: item 1: same question as item 0 and no 'id'"):
        load_questions("exact", write_json(tmp_path / "q.json", rows))


def test_repeated_text_with_distinct_ids_is_two_questions(tmp_path: Path) -> None:
    rows = [
        {"question": "Q", "answer": "1", "id": "a"},
        {"question": "Q", "answer": "1", "id": "b"},
    ]
    questions = load_questions("exact", write_jsonl(tmp_path / "q.jsonl", rows))
    assert [q.id for q in questions] == ["a", "b"]


@pytest.mark.parametrize(
    ("task", "content", "message"),
    [
        ("math", '{"problem": "p"}\n', r"math.jsonl:1: missing key 'answer'"),
        ("math", '{"problem": "p\\ud800", "answer": "1"}\n', r":1: 'problem' is not valid Unicode"),
        (
            "gpqa",
            '{"question": "q", "choices": ["a", "\\udfff"], "answer": "A"}\n',
            r":1: 'choices' is not valid Unicode",
        ),
        (
            "exact",
            '{"question": "q", "answer": ' + "9" * 5000 + "}\n",
            r":1: invalid JSON \(a number",
        ),
        (
            "exact",
            '[{"question": "q", "answer": ' + "9" * 5000 + "}]",
            r"math.jsonl: invalid JSON \(a",
        ),
        (
            "math",
            '{"problem": "p", "answer": "1"}\n\n{"answer": "2"}\n',
            r":3: missing key 'problem'",
        ),
        (
            "math",
            '[{"problem": "p", "answer": "1"}, {"answer": "2"}]',
            r"item 1: missing key 'problem'",
        ),
        ("math", '{"problem": "p", "solution": "no box"}\n', r":1: missing key 'answer' and no"),
        ("math", '{"problem": "", "answer": "1"}\n', r":1: 'problem' must be a non-empty string"),
        ("math", '{"problem": "p", "answer": true}\n', r":1: 'answer' must be a non-empty string"),
        ("gsm8k", '{"question": "q", "answer": "so five"}\n', r":1: 'answer' has no final '####"),
        (
            "gpqa",
            '{"question": "q", "choices": ["a", "b"], "answer": "C"}\n',
            r":1: 'answer' must be",
        ),
        (
            "gpqa",
            '{"question": "q", "choices": ["a"], "answer": "A"}\n',
            r":1: 'choices' must hold",
        ),
        (
            "gpqa",
            '{"question": "q", "choices": "ab", "answer": "A"}\n',
            r":1: 'choices' must be a list",
        ),
        (
            "gpqa",
            '{"Question": "q", "Correct Answer": "a"}\n',
            r":1: missing key 'Incorrect Answer 1'",
        ),
        ("exact", '{"question": "q", "reference": "r", "id": "x"}\n' * 2, r":2: duplicate id 'x'"),
        ("exact", '{"question": "q"\n', r":1: invalid JSON"),
        ("exact", '["q"]', r"item 0: expected a JSON object"),
        ("exact", "\n\n", r"math.jsonl: no questions"),
    ],
)
def test_layout_errors_name_file_line_and_key(
    tmp_path: Path, task: str, content: str, message: str
) -> None:
    path = tmp_path / "math.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FormatError, match=message) as raised:
        load_questions(task, path)
    assert str(raised.value).startswith(str(path))
    assert "\n" not in str(raised.value)


def test_missing_file_and_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.json: no such file"):
        load_questions("math", tmp_path / "missing.json")
    with pytest.raises(InputError, match="unknown task"):
        load_questions("nope", write_jsonl(tmp_path / "q.jsonl", [{"question": "q", "answer": 1}]))


# --------------------------------------------------------------- load_custom


def test_custom_defaults_to_exact_with_question_hash_ids(tmp_path: Path) -> None:
    path = tmp_path / "custom.jsonl"
    path.write_text('{"question": "Q1", "reference": "a"}\n\n{"question": "Q2", "reference": 2}\n')
    assert load_custom(path) == [
        ("exact", Question(question_hash("Q1"), "Q1", "a")),
        ("exact", Question(question_hash("Q2"), "Q2", "2")),
    ]
    path.write_text('{"question": "Q1", "reference": "a"}\n{"question": "Q1", "reference": "b"}\n')
    with pytest.raises(FormatError, match="same question as line 1 and no 'id'"):
        load_custom(path)


@pytest.mark.parametrize(
    ("row", "kind", "reference"),
    [
        ({"question": "Half?", "reference": r"\frac12", "type": "math"}, MathTask, r"\frac12"),
        ({"question": "N?", "reference": "$1,000", "type": "gsm8k"}, Gsm8kTask, "1000"),
        (
            {"question": "C?", "reference": "b", "type": "gpqa", "choices": ["x", "y"]},
            GpqaTask,
            "B",
        ),
        (
            {"question": "C?", "reference": "y", "type": "gpqa", "choices": ["x", "y"]},
            GpqaTask,
            "B",
        ),
    ],
)
def test_custom_types(tmp_path: Path, row: dict[str, Any], kind: type, reference: str) -> None:
    [(name, question)] = load_custom(write_jsonl(tmp_path / "custom.jsonl", [{"id": "q", **row}]))
    task = get_task(name)
    assert isinstance(task, kind)
    assert question.reference == reference
    assert question.choices == tuple(row.get("choices", ()))
    assert task.grade(reference, question.reference)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"reference": "a"}], r":1: missing key 'question'"),
        ([{"question": "q"}], r":1: missing key 'reference'"),
        ([{"question": "q", "reference": "a", "answer": "a"}], r":1: unknown key 'answer'"),
        ([{"question": "q", "reference": "a", "type": "maths"}], r":1: unknown type 'maths'"),
        ([{"question": "", "reference": "a"}], r":1: 'question' must be a non-empty string"),
        ([{"question": "  ", "reference": "a"}], r":1: 'question' must be a non-empty string"),
        (
            [{"question": "q", "reference": "x", "type": "gsm8k"}],
            r":1: 'reference' 'x' is not a number",
        ),
        ([{"question": "q", "reference": "A", "type": "gpqa"}], r":1: type 'gpqa' needs 'choices'"),
        (
            [{"question": "q", "reference": "A", "choices": ["x", "y"]}],
            r":1: 'choices' is only for",
        ),
        (
            [{"question": "q", "reference": "C", "type": "gpqa", "choices": ["x", "y"]}],
            r":1: 'reference' 'C' is neither an option letter nor an option",
        ),
        (
            [{"question": "q", "reference": "a", "id": ["x"]}],
            r":1: 'id' must be a non-empty string",
        ),
        (
            [
                {"question": "q", "reference": "a", "id": "d"},
                {"question": "p", "reference": "b", "id": "d"},
            ],
            r":2: duplicate id 'd' \(first at line 1\)",
        ),
        (["just text"], r":1: expected a JSON object"),
    ],
)
def test_custom_errors(tmp_path: Path, rows: list[Any], message: str) -> None:
    path = write_jsonl(tmp_path / "custom.jsonl", rows)
    with pytest.raises(FormatError, match=message):
        load_custom(path)


def test_custom_lines_may_each_name_their_type(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "question": "Half?", "reference": r"\frac12", "type": "math"},
        {"id": "b", "question": "Name?", "reference": "x"},
        {"id": "c", "question": "N?", "reference": "7", "type": "gsm8k"},
    ]
    loaded = load_custom(write_jsonl(tmp_path / "custom.jsonl", rows))
    assert [(kind, question.id) for kind, question in loaded] == [
        ("math", "a"),
        ("exact", "b"),
        ("gsm8k", "c"),
    ]


def test_custom_error_after_good_lines_returns_nothing(tmp_path: Path) -> None:
    rows: list[Any] = [{"question": f"q{i}", "reference": "a"} for i in range(5)]
    path = write_jsonl(tmp_path / "custom.jsonl", [*rows, {"question": "broken"}])
    with pytest.raises(FormatError) as raised:
        load_custom(path)
    assert (raised.value.path, raised.value.line) == (str(path), 6)
