"""The fast import path: both JSON parsers, repeated samples, references, the store checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slm_mux.errors import InputError, StoreError
from slm_mux.formats import detect_format, import_files, read_jsonl
from slm_mux.jsonfile import read_json_lines
from slm_mux.store import Store


def record(**fields: Any) -> dict[str, Any]:
    base = {"model": "a", "question_id": "q1", "sample": 0, "answer": "42", "reference": "42"}
    return {**base, "split": "test", **fields}


def write(path: Path, *records: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


TRICKY = (
    b'{"a": 1}\r\n'
    b"\n"
    b"  \t \n"
    b"\x1f\n"  # whitespace to str.strip: a blank line
    b'  {"b": [1, 2.5e-3, null, true]}  \n'
    b'{"c": "\\u00e9\\u2028\xe2\x82\xac", "c": "last"}\n'
    b'{"d": 9223372036854775807, "e": 1e300, "f": -0.0}\n'
    b'{"g": NaN, "h": 123456789012345678901234567890}\n'
    b'{"i": "\\ud800"}\n'
    b'"just a string"\n'
    b'{"j":\n'
)


def test_both_parsers_read_the_same_values_and_name_the_same_fault(
    tmp_path: Path, parser: str
) -> None:
    path = tmp_path / "tricky.jsonl"
    path.write_bytes(TRICKY)
    values = []
    with pytest.raises(InputError) as caught:
        for number, value in read_json_lines(path):
            values.append((number, json.dumps(value)))
    assert str(caught.value).startswith(f"{path}:11: invalid JSON (")
    numbers = [number for number, _ in values]
    assert numbers == [1, 5, 6, 7, 8, 9, 10]
    assert values[2][1] == json.dumps({"c": "last"})
    assert values[3][1] == json.dumps({"d": 2**63 - 1, "e": 1e300, "f": -0.0})
    assert values[4][1] == json.dumps({"g": float("nan"), "h": 123456789012345678901234567890})
    assert values[5][1] == json.dumps({"i": "\ud800"})


def test_a_bad_byte_is_named_before_a_later_bad_line(tmp_path: Path, parser: str) -> None:
    path = tmp_path / "both.jsonl"
    path.write_bytes(b'{"a": 1}\n{broken\n{"b": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"both\.jsonl:3: not UTF-8 text"):
        list(read_json_lines(path))


@pytest.mark.parametrize("number", [3, 5000])
def test_a_repeated_sample_is_kept_once_or_refused_with_both_lines(
    tmp_path: Path, number: int
) -> None:
    first = record(sample=number)
    again = write(tmp_path / "again.jsonl", first, record(sample=1), first)
    samples = read_jsonl(again)
    assert [(s.sample, s.answer) for s in samples] == [(number, "42"), (1, "42")]

    other = write(tmp_path / "other.jsonl", record(sample=1, answer="7"), record(sample=number))
    other_answer = write(tmp_path / "later.jsonl", record(sample=number, answer="41"))
    db = tmp_path / "s.db"
    with pytest.raises(InputError) as caught:
        import_files([again, other, other_answer], db)
    assert str(caught.value) == (
        f"{other}:1: sample 1 of 'a' on question 'q1' (exact, test) has answer '7', "
        f"but '42' at {again}:2"
    )
    assert not db.exists()


def test_the_whole_file_twice_in_one_import_is_read_once(tmp_path: Path) -> None:
    data = write(
        tmp_path / "a.jsonl", *(record(sample=s, correct=True, answer="1") for s in range(3))
    )
    report = import_files([data, data], tmp_path / "s.db")
    assert (report.read, report.new) == (6, 3)
    assert (report.regraded, report.first_regraded) == (3, f"{data}:1")


def test_references_differing_only_in_whitespace_are_one_question(tmp_path: Path) -> None:
    data = write(
        tmp_path / "a.jsonl",
        record(reference="42"),
        record(sample=1, reference=" 42\n"),
        record(model="b", reference="42 "),
    )
    samples = read_jsonl(data)
    assert [s.reference for s in samples] == ["42", " 42\n", "42 "]
    assert all(s.correct for s in samples)
    clash = write(
        tmp_path / "b.jsonl",
        record(model="c", reference=" 42"),
        record(model="c", sample=1, reference="41"),
        record(model="c", sample=2, reference="40"),
    )
    with pytest.raises(InputError) as caught:
        import_files([data, clash], tmp_path / "s.db")
    assert str(caught.value).startswith(
        f"{clash}:2: question 'q1' (exact, test) has reference '41', but '42' at {data}:1"
    )


def test_the_store_reference_is_found_under_any_model(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    stored = write(
        tmp_path / "a.jsonl",
        record(model="a", question_id="q2", reference="2"),
        record(model="m", reference="42"),
        record(model="m", question_id="q1", split="validation", reference="9"),
    )
    import_files([stored], db)
    clash = write(tmp_path / "b.jsonl", record(model="z", sample=5, reference="41"))
    with pytest.raises(StoreError, match=rf"{clash}:1: question 'q1' \(exact, test\) has "):
        import_files([clash], db)
    fine = write(tmp_path / "c.jsonl", record(model="z", split="validation", reference=" 9"))
    assert import_files([fine], db).new == 1


def test_a_partly_stored_import_adds_the_rest_and_replaces_on_request(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    half = write(tmp_path / "half.jsonl", *(record(sample=s) for s in range(2)))
    assert import_files([half], db).new == 2
    full = [record(sample=s) for s in range(4)]
    assert import_files([write(tmp_path / "full.jsonl", *full)], db).new == 2
    changed = write(tmp_path / "changed.jsonl", *full, record(sample=1, answer="7", model="a"))
    with pytest.raises(InputError, match=r"changed\.jsonl:5: sample 1 of 'a'"):
        import_files([changed], db)
    changed = write(tmp_path / "changed.jsonl", record(sample=1, answer="7"), record(sample=9))
    report = import_files([changed], db, replace=True)
    assert (report.read, report.new, report.replaced) == (2, 1, 1)
    with Store(db) as store:
        assert [(s.sample, s.answer) for s in store.samples()] == [
            (0, "42"),
            (1, "7"),
            (2, "42"),
            (3, "42"),
            (9, "42"),
        ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"model": "m", "responses": []}\n  \n\t\n', "authors"),
        ('\n\n{"a": 1}\n\n{"a": 2}', "jsonl"),
        ('{"a": 1}\n', "jsonl"),
        ("[1,\n 2]\n", "authors"),
    ],
)
def test_detect_format_reads_past_the_first_line_only_when_needed(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "data"
    path.write_text(content)
    assert detect_format(path) == expected
