"""Export then import moves a whole store: samples, question texts and compare records."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from slm_mux.cli import main
from slm_mux.errors import FormatError
from slm_mux.formats import export_jsonl, import_files
from slm_mux.records_jsonl import KEYS
from slm_mux.sample import Sample
from slm_mux.store import RECORD_TABLES, RecordedCall, Store


def _filled(db: Path) -> Path:
    """A store with samples (every optional field), questions (one without samples),
    compare calls and method runs (one with a result, one with wall time only)."""
    with Store(db) as store:
        store.add_questions("exact", "test", [("q1", "What is 1?", "1"), ("q2", "Two?", "2")])
        store.add_questions("exact", "test", [("q3", "Never asked ü?", "3")])
        store.add_questions("exact", "validation", [("v1", "Valid?", "1")])
        store.add(
            [
                Sample("a", "exact", "q1", "test", 0, "1", "1", None, "so 1", 5, 7, 0.25, "stop",
                       "h1", "2026-01-01T00:00:00.000+00:00"),
                Sample("a", "exact", "q2", "test", 0, None, "2", text="no idea"),
                Sample("b", "exact", "q1", "test", 0, "2", "1"),
                Sample("b", "exact", "v1", "validation", 0, "1", "1"),
            ]
        )  # fmt: skip
        for model, tokens in (("a", 12), ("b", None)):
            store.add_call(
                RecordedCall("debate", "c1", "exact", "test", "q1", "round1", model, 1,
                             [{"role": "user", "content": "What is 1?"}], [f"reply {model}"],
                             tokens, tokens, 0.5, 1)
            )  # fmt: skip
        key = ("debate", "c1", "exact", "test", "h")
        store.add_method_wall(key, 3.5)
        store.save_method_result(key, {"accuracy": 0.5, "rows": [1, {"b": None}]})
        store.add_method_wall(("moa", "c2", "exact", "test", "h"), 1.0)
    return db


def _content(db: Path) -> dict[str, Any]:
    with Store(db) as store:
        return {
            "samples": store.samples(),
            "questions": store.questions(),
            **{t.table: list(store.record_rows(t)) for t in RECORD_TABLES},
        }


def test_export_then_import_into_a_fresh_store_keeps_everything(tmp_path: Path) -> None:
    original = _filled(tmp_path / "a.db")
    stream = io.StringIO()
    with Store(original) as store:
        assert export_jsonl(store, stream) == 4
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("kind", "sample") for line in lines] == (
        ["question"] * 4 + ["sample"] * 4 + ["call"] * 2 + ["method_run"] * 2
    )
    exported = tmp_path / "a.jsonl"
    exported.write_text(stream.getvalue(), encoding="utf-8")
    report = import_files([exported], tmp_path / "b.db")
    assert (report.read, report.new) == (4, 4)
    assert report.records == {"compare call": 2, "method run": 2}
    copy = _content(tmp_path / "b.db")
    assert copy == _content(original)
    assert len(copy["questions"]) == 4 and len(copy["calls"]) == 2
    # Importing the export again adds nothing and contradicts nothing.
    assert import_files([exported], tmp_path / "b.db").new == 0
    assert _content(tmp_path / "b.db") == copy


def test_the_export_command_round_trips_through_the_import_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = _filled(tmp_path / "a.db")
    assert main(["export", "--store", str(original)]) == 0
    exported = tmp_path / "a.jsonl"
    exported.write_text(capsys.readouterr().out, encoding="utf-8")
    assert main(["import", str(exported), "--store", str(tmp_path / "b.db")]) == 0
    assert "merged 2 compare calls, 2 method runs" in capsys.readouterr().err
    assert _content(tmp_path / "b.db") == _content(original)


def test_filters_pick_questions_and_records(tmp_path: Path) -> None:
    original = _filled(tmp_path / "a.db")
    stream = io.StringIO()
    with Store(original) as store:
        export_jsonl(store, stream, split="validation")
        assert [
            json.loads(line).get("kind", "sample") for line in stream.getvalue().splitlines()
        ] == [
            "question",
            "sample",
        ]
        stream = io.StringIO()
        export_jsonl(store, stream, models=["b"])
    kinds = [
        (r.get("kind", "sample"), r.get("model"))
        for r in map(json.loads, stream.getvalue().splitlines())
    ]
    assert kinds == [("question", None)] * 4 + [("sample", "b")] * 2 + [("call", "b")]


def test_a_record_kind_names_its_columns() -> None:
    for table in RECORD_TABLES:
        assert tuple(KEYS[table.kind]) == table.columns


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"kind": "nope"}, "'kind' must be 'question', 'call', 'method_run', got 'nope'"),
        ({"kind": "question", "split": "test", "question_id": "q", "text": "t"},
         "missing key 'reference' in a question record"),
        ({"kind": "question", "split": "test", "question_id": "q", "text": "t", "reference": "1",
          "extra": 1}, "unknown key 'extra' in a question record"),
        ({"kind": "question", "split": "dev", "question_id": "q", "text": "t", "reference": "1"},
         "'split' must be 'validation' or 'test', got 'dev'"),
        ({"kind": "question", "task": "zzz", "split": "test", "question_id": "q", "text": "t",
          "reference": "1"}, "unknown task 'zzz'"),
    ],
)  # fmt: skip
def test_a_malformed_record_line_is_one_error_naming_it(
    tmp_path: Path, record: dict[str, Any], reason: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(FormatError) as raised:
        import_files([path], tmp_path / "s.db")
    assert str(raised.value) == f"{path}:1: {reason}"
    assert not (tmp_path / "s.db").exists()


def test_a_question_record_that_contradicts_a_stored_text_is_refused(tmp_path: Path) -> None:
    original = _filled(tmp_path / "a.db")
    path = tmp_path / "q.jsonl"
    line = {"kind": "question", "split": "test", "question_id": "q1", "text": "Other?",
            "reference": "1"}  # fmt: skip
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"q\.jsonl:1: question 'q1' \(exact, test\) has text"):
        import_files([path], original)
