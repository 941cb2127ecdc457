"""The SQLite sample store: schema, idempotent writes, queries, concurrency, side tables."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from slm_mux.errors import InputError, StoreError
from slm_mux.sample import Sample
from slm_mux.store import SCHEMA_VERSION, Failure, Store


def make(model: str, qid: str, sample: int, answer: str | None = "1", **extra: Any) -> Sample:
    """A validation sample of the exact task with reference "1"; ``extra`` overrides fields."""
    base = Sample(model, "exact", qid, "validation", sample, answer, "1", correct=answer == "1")
    return replace(base, **extra)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "samples.db") as opened:
        yield opened


def test_new_store_has_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "samples.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with Store(path, create=False) as reopened:
        assert reopened.path == path
        assert reopened.count() == 0


def test_opening_waits_for_a_writer_on_a_fresh_file(tmp_path: Path) -> None:
    # Switching to WAL fails at once (no busy timeout) while another connection
    # holds the write lock, as when several processes create one store together.
    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, holder.execute, args=("COMMIT",))
    release.start()
    try:
        with Store(path) as store:
            assert store.count() == 0
    finally:
        release.join()
        holder.close()


def test_missing_store_without_create(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(StoreError, match=r"absent\.db: no such store"):
        Store(path, create=False)
    assert not path.exists()


def _not_sqlite(path: Path) -> None:
    path.write_text("model,question\nm,q\n" * 200)


def _foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other (x INTEGER)")


def _newer_version(path: Path) -> None:
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))


def _two_versions(path: Path) -> None:
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))


@pytest.mark.parametrize(
    ("prepare", "reason"),
    [
        (_not_sqlite, "not a sample store"),
        (_foreign_sqlite, "no schema_version table"),
        (_newer_version, f"schema version {SCHEMA_VERSION + 1}"),
        (_two_versions, "schema_version holds 2 rows"),
    ],
)
@pytest.mark.parametrize("create", [True, False])
def test_bad_files_are_refused_naming_the_file(
    tmp_path: Path, prepare: object, reason: str, create: bool
) -> None:
    path = tmp_path / "bad.db"
    prepare(path)  # type: ignore[operator]
    with pytest.raises(StoreError, match=reason) as caught:
        Store(path, create=create)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


def test_refused_files_are_left_alone(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    _foreign_sqlite(foreign)
    with pytest.raises(StoreError):
        Store(foreign)
    with sqlite3.connect(foreign) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match="not a sample store"):
        Store(empty, create=False)
    assert empty.stat().st_size == 0


def test_add_is_idempotent_and_keeps_the_first_row(store: Store) -> None:
    first = [make("m", "q1", 0, "1"), make("m", "q1", 1, "2")]
    assert store.add(first) == 2
    stored = store.samples()
    assert store.add(first) == 0
    changed = [replace(first[0], answer="9", created_at="2000-01-01T00:00:00+00:00")]
    assert store.add([*changed, make("m", "q2", 0)]) == 1
    assert store.samples()[:2] == stored
    assert store.count() == 3


def test_created_at_is_stamped_in_utc_unless_given(store: Store) -> None:
    given = "2024-05-01T12:00:00+00:00"
    before = datetime.now(timezone.utc).replace(microsecond=0)  # stamps keep milliseconds
    store.add([make("m", "q1", 0), make("m", "q1", 1, created_at=given)])
    after = datetime.now(timezone.utc)
    stamped, kept = store.samples()
    assert kept.created_at == given
    assert stamped.created_at is not None
    when = datetime.fromisoformat(stamped.created_at)
    assert when.utcoffset() == timezone.utc.utcoffset(None)
    assert before <= when <= after  # stamped while it was added


def test_every_field_round_trips(store: Store) -> None:
    full = make(
        "m",
        "q1",
        3,
        None,
        correct=False,
        text="I think\u2028so",
        prompt_tokens=12,
        completion_tokens=0,
        latency_s=0.25,
        finish_reason="length",
        settings_hash="abc123",
        created_at="2024-05-01T12:00:00+00:00",
    )
    plain = make("m", "q2", 0, correct=None)
    store.add([full, plain])
    got_full, got_plain = store.samples()
    assert got_full == full
    # The store keeps the grader's verdict, whatever the sample said.
    assert got_plain == replace(plain, created_at=got_plain.created_at, correct=True)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (make("m", "q1", 0, split="train"), "split 'train'"),
        (make("m", "q1", -1), "negative sample index"),
    ],
)
def test_invalid_samples_are_rejected_before_writing(
    store: Store, bad: Sample, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        store.add([make("m", "q0", 0), bad])
    assert store.count() == 0


def test_queries_filter_and_order(store: Store) -> None:
    store.add(
        [
            make("b", "q2", 1, split="test"),
            make("b", "q10", 0),
            make("a", "q2", 0, task="other"),
            make("a", "q1", 1),
            make("a", "q1", 0),
            make("c", "q1", 0, split="test"),
        ]
    )
    keys = [(s.model, s.task, s.split, s.question_id, s.sample) for s in store.samples()]
    assert keys == sorted(keys)
    assert len(keys) == 6
    assert store.models() == ["a", "b", "c"]
    assert store.models(split="test") == ["b", "c"]
    assert store.splits() == ["test", "validation"]
    assert store.tasks() == ["exact", "other"]
    assert store.count(split="validation") == 4
    assert [s.question_id for s in store.samples(models=["a"], task="exact")] == ["q1", "q1"]
    assert {s.model for s in store.samples(split="test", models=["b", "c"])} == {"b", "c"}
    assert store.samples(models=[]) == []


def test_stored_keys(store: Store) -> None:
    store.add([make("m", "q1", 0), make("m", "q1", 2), make("m", "q2", 0, split="test")])
    store.add([make("other", "q3", 0)])
    assert store.stored_keys("m", "exact", "validation") == {("q1", 0), ("q1", 2)}
    assert store.stored_keys("m", "exact", "test") == {("q2", 0)}
    assert store.stored_keys("m", "math", "validation") == set()


def test_failures_count_attempts_and_clear(store: Store) -> None:
    store.record_failure("m", "exact", "q1", "test", "timeout")
    store.record_failure("m", "exact", "q1", "test", "HTTP 500")
    store.record_failure("n", "exact", "q2", "test", "refused")
    first, second = store.failures()
    assert (first.model, first.question_id, first.error, first.attempts) == (
        "m",
        "q1",
        "HTTP 500",
        2,
    )
    assert isinstance(second, Failure)
    assert second.attempts == 1
    assert [f.model for f in store.failures(model="n")] == ["n"]
    assert store.failures(split="validation") == []
    store.clear_failure("m", "exact", "q1", "test")
    assert [f.model for f in store.failures()] == ["n"]


def test_questions_table(store: Store) -> None:
    assert store.add_questions("exact", "test", [("q1", "What is 1?", "1"), ("q2", "2?", "2")]) == 2
    assert (
        store.add_questions("exact", "test", [("q1", " What is 1?\n", "1 "), ("q3", "3?", "3")])
        == 1
    )
    assert store.add_questions("exact", "validation", [("q1", "Other?", "7")]) == 1
    assert store.add_questions("math", "test", [("q1", "Other?", "7")]) == 1
    assert store.question_text("exact", "test", "q1") == "What is 1?"
    assert store.question_text("exact", "validation", "q1") == "Other?"
    assert store.question_text("exact", "test", "q4") is None


@pytest.mark.parametrize(
    "batch",
    [
        [("q3", "3?", "3"), ("q1", "What is 2?", "1")],
        [("q3", "3?", "3"), ("q1", "What is 1?", "2")],
        [("q3", "3?", "3"), ("q3", "Three?", "3")],
    ],
    ids=["text", "reference", "within-the-call"],
)
def test_a_question_id_never_names_two_questions(
    store: Store, batch: list[tuple[str, str, str]]
) -> None:
    store.add_questions("exact", "test", [("q1", "What is 1?", "1")])
    clashing = next(qid for qid, _, _ in reversed(batch))
    with pytest.raises(StoreError) as caught:
        store.add_questions("exact", "test", batch)
    assert str(caught.value) == (
        f"{store.path}: question '{clashing}' (exact, test) is stored with a different text "
        "or reference; use another --store"
    )
    assert store.question_text("exact", "test", "q1") == "What is 1?"
    assert store.question_text("exact", "test", "q3") is None  # nothing of the call written


def test_settings_hashes(store: Store) -> None:
    assert store.settings_hashes("m", "exact", "validation") == set()
    store.add(
        [
            make("m", "q1", 0, settings_hash="a"),
            make("m", "q1", 1, settings_hash="b"),
            make("m", "q2", 0, settings_hash="a"),
            make("m", "q3", 0),
            make("n", "q1", 0, settings_hash="c"),
            make("m", "q1", 0, split="test", settings_hash="d"),
            make("m", "q1", 0, task="math", settings_hash="e"),
        ]
    )
    assert store.settings_hashes("m", "exact", "validation") == {"a", "b"}
    assert store.settings_hashes("n", "exact", "validation") == {"c"}
    assert store.settings_hashes("m", "exact", "test") == {"d"}
    assert store.settings_hashes("m", "math", "validation") == {"e"}
    assert store.settings_hashes("x", "exact", "validation") == set()


WRITERS = 2
BATCHES = 25
BATCH = 40
SHARED = 10


def _writer(path: str, model: str, start: Any, results: Any) -> None:
    """One writer process: batches of its own model's rows, each followed by shared rows."""
    new = 0
    with Store(path) as store:
        start.wait()
        for batch in range(BATCHES):
            new += store.add(make(model, f"q{batch}", i) for i in range(BATCH))
            new += store.add(make("shared", f"s{batch % SHARED}", i) for i in range(2))
    results.put(new)


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    Store(path).close()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WRITERS)
    results = context.Queue()
    workers = [
        context.Process(target=_writer, args=(str(path), f"w{n}", start, results))
        for n in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    new_rows = [results.get(timeout=5) for _ in workers]
    shared_rows = SHARED * 2
    with Store(path, create=False) as store:
        assert store.count() == WRITERS * BATCHES * BATCH + shared_rows
        assert sum(new_rows) == store.count()
        for n in range(WRITERS):
            assert len(store.stored_keys(f"w{n}", "exact", "validation")) == BATCHES * BATCH
