"""Import and export: JSON Lines, the authors' layout, format detection, whole-file rejection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slm_mux.errors import FormatError, InputError, StoreError
from slm_mux.formats import (
    detect_format,
    import_files,
    read_authors,
    read_jsonl,
    stage_file,
    write_jsonl,
)
from slm_mux.sample import Sample
from slm_mux.store import Staging, Store
from slm_mux.tasks.base import question_hash

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def line(**fields: Any) -> str:
    """One valid JSONL record, with ``fields`` added or overriding (``None`` drops a key)."""
    record: dict[str, Any] = {
        "model": "m",
        "question_id": "q1",
        "sample": 0,
        "answer": "42",
        "reference": "42",
        "split": "validation",
    }
    record.update(fields)
    return json.dumps({key: value for key, value in record.items() if value is not None})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(text + "\n" for text in lines), encoding="utf-8")
    return path


def import_file(store: Store, path: Path, **options: Any) -> tuple[int, int]:
    """Stage one file and import it into an open store: (samples read, samples new)."""
    with Staging() as staging:
        stage_file(staging, path, **options)
        report = store.import_staged(staging)
    return report.read, report.new


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "samples.db") as opened:
        yield opened


SAMPLES = [
    Sample("m", "exact", "q1", "validation", 0, "42", "42", correct=True),
    Sample("m", "exact", "q1", "validation", 1, None, "42", correct=False, text=""),
    Sample(
        "m",
        "exact",
        "q\u00e9",
        "test",
        0,
        "a\u2028b",
        "x",
        correct=False,
        text="line one\nline two \u2029 \U0001f600",
        prompt_tokens=17,
        completion_tokens=0,
        latency_s=1.5e-3,
        finish_reason="stop",
        settings_hash="9f2c",
        created_at="2024-05-01T12:00:00.000+00:00",
    ),
    Sample("n", "exact", "q1", "test", 7, "", "", correct=False, latency_s=2.0),
]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with path.open("w", encoding="utf-8") as stream:
        assert write_jsonl(SAMPLES, stream) == len(SAMPLES)
    assert len(path.read_text(encoding="utf-8").split("\n")) == len(SAMPLES) + 1
    assert read_jsonl(path) == SAMPLES


def test_export_import_through_the_store(tmp_path: Path, store: Store) -> None:
    store.add(SAMPLES)
    exported = tmp_path / "export.jsonl"
    with exported.open("w", encoding="utf-8") as stream:
        write_jsonl(store.samples(), stream)
    with Store(tmp_path / "copy.db") as copy:
        assert import_file(copy, exported) == (len(SAMPLES), len(SAMPLES))
        assert copy.samples() == store.samples()


@pytest.mark.parametrize(
    ("fields", "task", "answer", "correct"),
    [
        ({}, "exact", "42", True),
        ({"answer": " 42 "}, "exact", " 42 ", True),
        ({"answer": "41"}, "exact", "41", False),
        ({"answer": None}, "exact", None, False),
        ({"answer": "41", "correct": True}, "exact", "41", False),  # the grader wins
        ({"correct": None}, "exact", "42", True),
        ({"task": "exact", "answer": "4 2"}, "exact", "4 2", False),
    ],
)
def test_jsonl_defaults_and_grading(
    tmp_path: Path, fields: dict[str, Any], task: str, answer: str | None, correct: bool
) -> None:
    record = {**json.loads(line()), **fields}
    path = write_lines(tmp_path / "one.jsonl", [json.dumps(record)])
    (sample,) = read_jsonl(path)
    assert (sample.task, sample.answer, sample.correct) == (task, answer, correct)
    assert sample.created_at is None


def test_unknown_default_task(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown task 'nope'"):
        read_jsonl(write_lines(tmp_path / "a.jsonl", [line()]), default_task="nope")


def test_blank_lines_and_repeated_identical_samples_are_skipped(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.jsonl", ["", line(), "  ", line(text="again"), line(sample=1)])
    samples = read_jsonl(path)
    assert [(s.sample, s.text) for s in samples] == [(0, None), (1, None)]


BAD_LINES = [
    ("{not json", "invalid JSON"),
    ('["a", "list"]', "expected a JSON object"),
    (line(modle="m"), "unknown key 'modle'"),
    (line(reference=None), "missing key 'reference'"),
    (line(model=""), "'model' must be a non-empty string"),
    (line(question_id=3), "'question_id' must be a non-empty string, got 3"),
    (line(sample=-1), "'sample' must be an integer from 0 to 2**63-1, got -1"),
    (line(sample="0"), "'sample' must be an integer from 0 to 2**63-1"),
    (line(sample=True), "'sample' must be an integer from 0 to 2**63-1, got true"),
    (line(sample=1.0), "'sample' must be an integer from 0 to 2**63-1"),
    (line(sample=2**63), f"'sample' must be an integer from 0 to 2**63-1, got {2**63}"),
    (line(sample=10**30), "'sample' must be an integer from 0 to 2**63-1"),
    (line(split="train"), "'split' must be 'validation' or 'test', got \"train\""),
    (line(answer=42), "'answer' must be a string or null"),
    (line(task="nope"), "unknown task 'nope'"),
    (line(prompt_tokens=-5), "'prompt_tokens' must be an integer from 0 to 2**63-1 or null"),
    (line(prompt_tokens=2**63), "'prompt_tokens' must be an integer from 0 to 2**63-1 or null"),
    (line(completion_tokens=2**64), "'completion_tokens' must be an integer from 0 to 2**63-1"),
    (line(latency_s="fast"), "'latency_s' must be a finite non-negative number or null"),
    (line(latency_s=10**400), "'latency_s' must be a finite non-negative number or null"),
    (line()[:-1] + ', "latency_s": 1e400}', "'latency_s' must be a finite non-negative number"),
    (line()[:-1] + ', "latency_s": NaN}', "'latency_s' must be a finite non-negative number"),
    (line()[:-1] + ', "sample": ' + "9" * 5000 + "}", "invalid JSON (a number too long to read)"),
    (line(answer="a\ud800b"), "'answer' is not valid Unicode (a lone surrogate)"),
    (line(question_id="\udc80"), "'question_id' is not valid Unicode"),
    (line(correct="yes"), "'correct' must be true, false or null"),
    (line(text=["x"]), "'text' must be a string or null"),
    (line(answer="7"), "on question 'q1' (exact, validation) has answer '7', but '42' at "),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
def test_malformed_jsonl_is_rejected_whole(
    tmp_path: Path, store: Store, bad: str, reason: str, parser: str
) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [line(), line(sample=1), bad, line(sample=2)])
    with pytest.raises(InputError) as caught:
        import_file(store, path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert reason in message
    assert "\n" not in message
    assert store.count() == 0


def test_largest_values_sqlite_holds_are_stored(tmp_path: Path, store: Store) -> None:
    biggest = 2**63 - 1
    record = line(sample=biggest, prompt_tokens=biggest, completion_tokens=0, latency_s=10**300)
    path = write_lines(tmp_path / "big.jsonl", [record])
    assert import_file(store, path) == (1, 1)
    (sample,) = store.samples()
    assert (sample.sample, sample.prompt_tokens, sample.latency_s) == (biggest, biggest, 1e300)


def test_non_utf8_line_is_named(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes((line() + "\n").encode() + b'{"model": "caf\xe9"}\n')
    with pytest.raises(FormatError, match=r"latin\.jsonl:2: not UTF-8 text"):
        import_file(store, path)
    assert store.count() == 0


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothing\.jsonl: no such file"):
        read_jsonl(tmp_path / "nothing.jsonl")


def test_double_import_changes_nothing(tmp_path: Path, store: Store) -> None:
    lines = [line(sample=i, answer=str(40 + i)) for i in range(5)]
    path = write_lines(tmp_path / "a.jsonl", lines)
    assert import_file(store, path) == (5, 5)
    first = store.samples()
    assert all(s.created_at for s in first)
    assert import_file(store, path) == (5, 0)
    assert store.samples() == first
    restamped = [
        line(sample=i, answer=str(40 + i), created_at="2000-01-01T00:00:00+00:00") for i in range(5)
    ]
    assert import_file(store, write_lines(tmp_path / "b.jsonl", restamped)) == (5, 0)
    assert store.samples() == first


@pytest.mark.parametrize(
    ("option", "value"), [("split", "test"), ("model", "other")], ids=["split", "model"]
)
def test_jsonl_must_match_a_given_split_or_model(
    tmp_path: Path, store: Store, option: str, value: str
) -> None:
    path = write_lines(tmp_path / "a.jsonl", [line()])
    with pytest.raises(InputError, match=rf"a\.jsonl:1: {option} '.*' is not '{value}'"):
        import_file(store, path, **{option: value})
    assert store.count() == 0
    assert import_file(store, path, split="validation", model="m") == (1, 1)


# The authors' layout


def authors_file(path: Path, responses: Any, **top: Any) -> Path:
    path.write_text(json.dumps({**top, "responses": responses}, indent=2), encoding="utf-8")
    return path


@pytest.mark.parametrize("question_key", ["problem", "question"])
@pytest.mark.parametrize("reference_key", ["reference_answer", "correct_answer", "answer"])
@pytest.mark.parametrize("response_key", ["response", "text", "raw_response"])
def test_authors_aliases(
    tmp_path: Path, question_key: str, reference_key: str, response_key: str
) -> None:
    responses = [
        {
            question_key: "What is 6*7?",
            reference_key: "42",
            "samples": [
                {"extracted_answer": "42", response_key: "so 42"},
                {"extracted_answer": " 41 "},
                {"extracted_answer": None, response_key: "no idea"},
                {"extracted_answer": "", "is_correct": True},
                {"extracted_answer": 42},
            ],
            "accuracy": 0.2,
        }
    ]
    path = authors_file(tmp_path / "phi.json", responses, model="phi-3")
    samples = read_authors(path, split="test")
    expected_id = question_hash("What is 6*7?")
    assert [(s.sample, s.answer, s.correct, s.text) for s in samples] == [
        (0, "42", True, "so 42"),
        (1, "41", False, None),
        (2, None, False, "no idea"),
        (3, None, False, None),
        (4, "42", True, None),
    ]
    assert {(s.model, s.task, s.question_id, s.split, s.reference) for s in samples} == {
        ("phi-3", "exact", expected_id, "test", "42")
    }


@pytest.mark.parametrize(
    ("id_fields", "expected"),
    [
        ({"id": "a1"}, "a1"),
        ({"question_id": 7}, "7"),
        ({"unique_id": "test/algebra/1.json"}, "test/algebra/1.json"),
        ({}, question_hash("  Same question. ")),
    ],
)
def test_authors_question_ids(tmp_path: Path, id_fields: dict[str, Any], expected: str) -> None:
    ids = set()
    for model, question in (("a", "Same question."), ("b", "Same question.  ")):
        item = {"question": question, "answer": "1", "samples": [{"extracted_answer": "1"}]}
        path = authors_file(tmp_path / f"{model}.json", [item | id_fields])
        ids.add(read_authors(path, split="validation")[0].question_id)
    assert ids == {expected}
    assert len(question_hash("x")) == 12


@pytest.mark.parametrize(
    ("top", "argument", "expected"),
    [
        ({"model": "from-file"}, None, "from-file"),
        ({"model_name": "from-name"}, None, "from-name"),
        ({"model": "from-file"}, "from-argument", "from-argument"),
        ({}, None, "qwen2.5-1.5b"),
    ],
)
def test_authors_model_name(
    tmp_path: Path, top: dict[str, Any], argument: str | None, expected: str
) -> None:
    item = {"question": "q", "answer": "1", "samples": [{"extracted_answer": "1"}]}
    path = authors_file(tmp_path / "qwen2.5-1.5b.json", [item], **top)
    assert read_authors(path, model=argument, split="test")[0].model == expected


def test_authors_bare_list_and_task(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"question": "q", "answer": "1", "samples": []}]))
    assert detect_format(path) == "authors"
    assert read_authors(path, split="test") == []
    with pytest.raises(InputError, match="unknown task 'nope'"):
        read_authors(path, split="test", task="nope")
    with pytest.raises(InputError, match=r"m\.json: split 'train'"):
        read_authors(path, split="train")


def _good(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"question": "q2", "answer": "2", "samples": [{"extracted_answer": "2"}]}
    item.update(changes)
    return item


BAD_RESPONSES = [
    ("text", "responses[1]: expected an object"),
    ({"answer": "2", "samples": []}, "responses[1]: no question text"),
    (_good(question=5), "responses[1]: no question text"),
    ({"question": "q2", "samples": []}, "responses[1]: no reference"),
    (_good(answer=None), "responses[1]: no reference"),
    (_good(samples=None), "responses[1]: 'samples' must be a list"),
    (_good(id=True), "responses[1]: 'id' must be a non-empty string or an integer"),
    (_good(question="q1"), "responses[1]: question '" + question_hash("q1") + "' repeats"),
    (_good(samples=[{"response": "x"}]), "responses[1].samples[0]: expected an object with"),
    (_good(samples=["2"]), "responses[1].samples[0]: expected an object with"),
    (
        _good(samples=[{"extracted_answer": "2"}, {"extracted_answer": ["2"]}]),
        "responses[1].samples[1]: 'extracted_answer' must be a string, number or null",
    ),
    (
        _good(samples=[{"extracted_answer": "2", "text": 3}]),
        "responses[1].samples[0]: 'text' must be a string or null",
    ),
    (_good(question="q\ud800"), "responses[1]: a string is not valid Unicode"),
    (_good(id="\udfff"), "responses[1]: a string is not valid Unicode"),
    (
        _good(samples=[{"extracted_answer": "2", "response": "\ud800"}]),
        "responses[1].samples[0]: a string is not valid Unicode",
    ),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_RESPONSES)
def test_malformed_authors_file_is_rejected_whole(
    tmp_path: Path, store: Store, bad: Any, reason: str
) -> None:
    good = {"question": "q1", "answer": "1", "samples": [{"extracted_answer": "1"}]}
    path = authors_file(tmp_path / "m.json", [good, bad, good | {"question": "q3"}])
    with pytest.raises(FormatError) as caught:
        import_file(store, path, split="test")
    assert str(caught.value).startswith(f"{path}: {reason}")
    assert store.count() == 0
    assert store.question_text("exact", "test", question_hash("q1")) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"responses": 3}', "expected an object with a 'responses' list"),
        ('{"model": 3, "responses": []}', "'model' must be a non-empty string"),
        ('{"responses": [\n  {"question": "q",}\n]}', "invalid JSON"),
        ('{"responses": [], "n": ' + "9" * 5000 + "}", r"invalid JSON \(a number too long"),
        ('{"model": "\\ud800", "responses": []}', "'model': a string is not valid Unicode"),
    ],
)
def test_malformed_authors_document(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(FormatError, match=reason):
        read_authors(path, split="test")


def test_authors_import_needs_a_split_and_stores_questions(tmp_path: Path, store: Store) -> None:
    item = {"problem": "1+1?", "answer": "2", "id": "p1", "samples": [{"extracted_answer": "2"}]}
    path = authors_file(tmp_path / "m.json", [item])
    with pytest.raises(InputError, match=r"m\.json: the authors' layout has no split"):
        import_file(store, path)
    assert import_file(store, path, split="validation") == (1, 1)
    assert import_file(store, path, split="validation") == (1, 0)
    assert store.question_text("exact", "validation", "p1") == "1+1?"
    assert store.samples()[0].correct is True


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (line() + "\n" + line(sample=1) + "\n", "jsonl"),
        (line() + "\n", "jsonl"),
        ("", "jsonl"),
        ("{broken\n", "jsonl"),
        ('\n  {"model": "m", "responses": []}', "authors"),
        ('{\n  "responses": [\n  ]\n}\n', "authors"),
        ('[{"question": "q"}]', "authors"),
        ('{"responses": []}\n{"responses": []}\n', "jsonl"),
    ],
)
def test_detect_format(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "data.txt"
    path.write_text(content)
    assert detect_format(path) == expected


def test_authors_file_built_from_math500(tmp_path: Path, store: Store) -> None:
    source = DATA / "math_500.json"
    if not source.exists():
        pytest.skip(f"shared data not found at {DATA} (../shared/data beside the repo)")
    problems = json.loads(source.read_text(encoding="utf-8"))[:50]
    responses = [
        {
            "problem": p["problem"],
            "reference_answer": p["answer"],
            "unique_id": p["unique_id"],
            "samples": [{"extracted_answer": p["answer"]}, {"extracted_answer": None}],
        }
        for p in problems
    ]
    path = authors_file(tmp_path / "model.json", responses, model="oracle")
    assert import_file(store, path, split="test") == (100, 100)
    assert store.count(split="test") == 100
    assert [s.correct for s in store.samples()].count(True) == 50
    first = problems[0]
    assert store.question_text("exact", "test", first["unique_id"]) == first["problem"]


# Whole files before the store: staged, then imported in one transaction


def test_a_bad_file_among_several_writes_nothing(tmp_path: Path) -> None:
    item = {"question": "q", "answer": "1", "samples": [{"extracted_answer": "1"}]}
    files = [
        write_lines(tmp_path / "a.jsonl", [line(), line(sample=1)]),
        authors_file(tmp_path / "b.json", [item], model="b"),
        write_lines(tmp_path / "c.jsonl", [line(model="c"), line(model="c", sample=2**63)]),
        write_lines(tmp_path / "d.jsonl", [line(model="d")]),
    ]
    store_path = tmp_path / "new" / "samples.db"

    def import_all(paths: list[Path]) -> None:
        """The CLI's import: validate every file, only then open the store and write."""
        import_files(paths, store_path, split="validation")

    with pytest.raises(FormatError, match=r"c\.jsonl:2: 'sample' must be"):
        import_all(files)
    assert not store_path.exists()
    assert not store_path.parent.exists()
    import_all(files[:2] + files[3:])
    with Store(store_path, create=False) as store:
        assert store.count() == 4
        assert store.question_text("exact", "validation", question_hash("q")) == "q"


def test_a_question_stored_with_other_text_stops_before_its_samples(
    tmp_path: Path, store: Store
) -> None:
    item = {"id": "p1", "question": "1+1?", "answer": "2", "samples": [{"extracted_answer": "2"}]}
    first = authors_file(tmp_path / "a.json", [item], model="a")
    assert import_file(store, first, split="test") == (1, 1)
    other = authors_file(tmp_path / "b.json", [item | {"question": "2+2?"}], model="b")
    with pytest.raises(
        StoreError,
        match=r"b\.json: responses\[0\]: question 'p1' \(exact, test\) has text '2\+2\?', "
        r"but .* holds it with text '1\+1\?'",
    ):
        import_file(store, other, split="test")
    assert store.models() == ["a"]
    assert store.question_text("exact", "test", "p1") == "1+1?"
