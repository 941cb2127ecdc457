"""JSON nested deeper than Python's recursion allows, in any file slm-mux reads, is one error
line naming the file (and the line, where one is known), not a RecursionError traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm_mux.cli import main
from slm_mux.errors import InputError
from slm_mux.tasks.data import load_questions

DEPTHS = [2_000, 100_000]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def sample_line(answer: str = '"1"', question: str = "q0") -> str:
    fields = f'"model": "a", "question_id": "{question}", "sample": 0, "split": "test"'
    return f'{{{fields}, "reference": "1", "answer": {answer}}}\n'


def only_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:2000]
    return lines[0]


@pytest.mark.usefixtures("parser")
@pytest.mark.parametrize("depth", DEPTHS)
def test_a_deep_jsonl_line_names_its_file_and_line(
    tmp_path: Path, depth: int, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "deep.jsonl"
    data.write_text(sample_line() + "\n" + sample_line(nested(depth), "q1"))
    assert main(["import", str(data), "--store", str(tmp_path / "s.db")]) == 1
    assert only_error(capsys.readouterr().err).startswith(f"slm-mux: error: {data}:3: ")


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize(
    "document",
    [
        lambda deep: deep,  # a bare array: the authors' layout
        lambda deep: f'{{"responses": {deep}}}',
        lambda deep: f'[{{"problem": {deep}}}]',
        lambda deep: sample_line(deep).strip(),  # one JSON Lines line alone
    ],
)
def test_a_deep_document_to_import_is_one_line(
    tmp_path: Path, depth: int, document: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(document)
    data = tmp_path / "deep.json"
    data.write_text(document(nested(depth)))
    argv = ["import", str(data), "--store", str(tmp_path / "s.db"), "--split", "test"]
    assert main(argv) == 1
    assert only_error(capsys.readouterr().err).startswith(f"slm-mux: error: {data}")


@pytest.mark.usefixtures("parser")
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_deep_question_file_is_one_error(tmp_path: Path, depth: int, suffix: str) -> None:
    rows = [{"question": "What is 1 + 1?", "answer": "2"}]
    deep = f'{{"question": {nested(depth)}, "answer": "2"}}'
    data = tmp_path / f"questions{suffix}"
    if suffix == ".jsonl":
        data.write_text(json.dumps(rows[0]) + "\n" + deep + "\n")
    else:
        data.write_text(f"[{json.dumps(rows[0])}, {deep}]")
    with pytest.raises(InputError) as caught:
        load_questions("gsm8k", data)
    assert str(caught.value).startswith(f"{data}")
    assert "\n" not in str(caught.value)
