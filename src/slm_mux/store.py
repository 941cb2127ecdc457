"""The sample store: one SQLite file (WAL mode) holding every sample ever collected.

Tables:

- ``samples``: one row per sample, keyed by (model, task, split, question_id,
  sample); writes keep the first row stored under a key, so importing the same
  data twice changes nothing;
- ``questions``: question text and reference per (task, split, question_id),
  for reports; an id is never stored for two different questions;
- ``failures``: questions whose collection failed, with the last error;
- ``schema_version``: one integer, :data:`SCHEMA_VERSION`.

Several processes may write to one store at once: every write is one short
``BEGIN IMMEDIATE`` transaction and waits for the others (busy timeout).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from slm_mux.errors import InputError, StoreError
from slm_mux.sample import SPLITS, Sample

SCHEMA_VERSION = 1
"""Version of the table layout this code reads and writes."""

BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's transaction to finish."""

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE samples (
        model TEXT NOT NULL,
        task TEXT NOT NULL,
        question_id TEXT NOT NULL,
        split TEXT NOT NULL CHECK (split IN ('validation', 'test')),
        sample INTEGER NOT NULL CHECK (sample >= 0),
        answer TEXT,
        reference TEXT NOT NULL,
        correct INTEGER,
        text TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        latency_s REAL,
        finish_reason TEXT,
        settings_hash TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (model, task, split, question_id, sample)
    ) WITHOUT ROWID""",
    """CREATE TABLE questions (
        task TEXT NOT NULL,
        split TEXT NOT NULL,
        question_id TEXT NOT NULL,
        text TEXT NOT NULL,
        reference TEXT NOT NULL,
        PRIMARY KEY (task, split, question_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE failures (
        model TEXT NOT NULL,
        task TEXT NOT NULL,
        question_id TEXT NOT NULL,
        split TEXT NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        last_at TEXT NOT NULL,
        PRIMARY KEY (model, task, split, question_id)
    ) WITHOUT ROWID""",
)

_COLUMNS = tuple(field.name for field in fields(Sample))
_SAMPLE_COLUMNS = ", ".join(_COLUMNS)
_SAMPLE_ORDER = "ORDER BY model, task, split, question_id, sample"
_INSERT_SAMPLE = (
    f"INSERT INTO samples ({_SAMPLE_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT DO NOTHING"
)

_Filter = str | Sequence[str] | None


def utc_now() -> str:
    """The current time as UTC ISO-8601, the format of ``created_at``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Holding:
    """The samples of one model on one task and split: counts, and the stored accuracy.

    ``accuracy`` is the mean of the stored verdicts (``None`` when none is
    stored); ``failed`` counts questions whose collection failed last time.
    """

    task: str
    split: str
    model: str
    questions: int
    samples: int
    no_answer: int
    accuracy: float | None
    failed: int


@dataclass(frozen=True)
class Failure:
    """A question whose collection failed for a model: the last error and how often."""

    model: str
    task: str
    question_id: str
    split: str
    error: str
    attempts: int
    last_at: str


def _where(**conditions: _Filter) -> tuple[str, list[str]]:
    """A ``WHERE`` clause: a string matches its column exactly, a sequence is ``IN``."""
    clauses: list[str] = []
    params: list[str] = []
    for column, value in conditions.items():
        if value is None:
            continue
        if isinstance(value, str):
            clauses.append(f"{column} = ?")
            params.append(value)
        else:
            clauses.append(f"{column} IN ({', '.join('?' * len(value))})")
            params.extend(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _sample_row(sample: Sample, created_at: str) -> tuple[object, ...]:
    """The column values of ``sample``, stamped with ``created_at`` if it has none."""
    if sample.split not in SPLITS:
        raise InputError(
            f"sample {sample.model}/{sample.question_id}#{sample.sample}: "
            f"split {sample.split!r} is not one of {', '.join(SPLITS)}"
        )
    if sample.sample < 0:
        raise InputError(
            f"sample {sample.model}/{sample.question_id}#{sample.sample}: negative sample index"
        )
    values = {column: getattr(sample, column) for column in _COLUMNS}
    values["created_at"] = sample.created_at or created_at
    return tuple(values.values())


def _sample_from_row(row: Sequence[Any]) -> Sample:
    values = dict(zip(_COLUMNS, row, strict=True))
    if values["correct"] is not None:
        values["correct"] = bool(values["correct"])
    return Sample(**values)


class Store:
    """A sample store in one SQLite file; use as a context manager or call :meth:`close`.

    With ``create=False`` the file must already be a store. A file that is not
    SQLite, or not a store of a version this code reads, raises
    :class:`StoreError` naming it.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no such store")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: cannot open ({error})") from None
        try:
            self._prepare(create)
        except BaseException:
            self._conn.close()
            raise

    def _prepare(self, create: bool) -> None:
        """Check the file is a store (or, with ``create``, empty), switch to WAL, make tables."""
        try:
            tables = self._tables()
            if "schema_version" not in tables and (tables or not create):
                raise StoreError(f"{self.path}: not a sample store (no schema_version table)")
            self._use_wal()
            self._conn.execute("PRAGMA synchronous = NORMAL")
            if not tables:
                self._create_tables()
            self._check_version()
        except sqlite3.OperationalError as error:
            raise StoreError(f"{self.path}: cannot open store ({error})") from None
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path}: not a sample store ({error})") from None

    def _tables(self) -> set[str]:
        rows = self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}

    def _use_wal(self) -> None:
        """Turn on WAL mode; the switch ignores the busy timeout, so retry until it passes."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _create_tables(self) -> None:
        with self._write():
            if not self._tables():  # another process may have made them meanwhile
                for statement in _SCHEMA:
                    self._conn.execute(statement)
                self._conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    def _check_version(self) -> None:
        versions = [v for (v,) in self._conn.execute("SELECT version FROM schema_version")]
        if len(versions) != 1:
            raise StoreError(f"{self.path}: schema_version holds {len(versions)} rows, not 1")
        if versions[0] != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {versions[0]}, "
                f"this slm-mux reads version {SCHEMA_VERSION}"
            )

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taking the write lock up front (waits for other writers)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Samples

    def add(self, samples: Iterable[Sample]) -> int:
        """Store ``samples`` in one transaction; returns how many were new.

        A sample whose key is already stored is skipped (the first row stays).
        A sample without ``created_at`` is stamped with the current UTC time.
        """
        now = utc_now()
        rows = [_sample_row(sample, now) for sample in samples]
        with self._write():
            before = self._conn.total_changes
            self._conn.executemany(_INSERT_SAMPLE, rows)
            return self._conn.total_changes - before

    def samples(
        self,
        *,
        split: str | None = None,
        models: Sequence[str] | None = None,
        task: str | None = None,
    ) -> list[Sample]:
        """Stored samples, ordered by model, task, split, question_id, sample."""
        where, params = _where(split=split, model=models, task=task)
        rows = self._conn.execute(
            f"SELECT {_SAMPLE_COLUMNS} FROM samples {where} {_SAMPLE_ORDER}", params
        )
        return [_sample_from_row(row) for row in rows]

    def models(self, *, split: str | None = None) -> list[str]:
        """Distinct models with samples, sorted."""
        where, params = _where(split=split)
        rows = self._conn.execute(f"SELECT DISTINCT model FROM samples {where} ORDER BY 1", params)
        return [model for (model,) in rows]

    def splits(self) -> list[str]:
        """Distinct splits with samples, sorted."""
        return [s for (s,) in self._conn.execute("SELECT DISTINCT split FROM samples ORDER BY 1")]

    def tasks(self) -> list[str]:
        """Distinct tasks with samples, sorted."""
        return [t for (t,) in self._conn.execute("SELECT DISTINCT task FROM samples ORDER BY 1")]

    def count(self, *, split: str | None = None) -> int:
        """Number of stored samples."""
        where, params = _where(split=split)
        (count,) = self._conn.execute(f"SELECT COUNT(*) FROM samples {where}", params).fetchone()
        return int(count)

    def summary(self) -> list[Holding]:
        """What the store holds, per task, split and model (sorted)."""
        rows = self._conn.execute(
            "SELECT task, split, model, COUNT(DISTINCT question_id), COUNT(*), "
            "SUM(answer IS NULL), AVG(correct), "
            "(SELECT COUNT(*) FROM failures f WHERE f.task = s.task AND f.split = s.split "
            "AND f.model = s.model) "
            "FROM samples s GROUP BY task, split, model ORDER BY task, split, model"
        )
        holdings = {
            (task, split, model): Holding(task, split, model, q, n, empty, acc, failed)
            for task, split, model, q, n, empty, acc, failed in rows
        }
        # A model whose every question failed has no samples, only failures.
        for task, split, model, failed in self._conn.execute(
            "SELECT task, split, model, COUNT(*) FROM failures GROUP BY task, split, model"
        ):
            holdings.setdefault(
                (task, split, model), Holding(task, split, model, 0, 0, 0, None, failed)
            )
        return [holdings[key] for key in sorted(holdings)]

    def stored_keys(self, model: str, task: str, split: str) -> set[tuple[str, int]]:
        """The (question_id, sample) pairs already stored for one model, task and split."""
        rows = self._conn.execute(
            "SELECT question_id, sample FROM samples WHERE model = ? AND task = ? AND split = ?",
            (model, task, split),
        )
        return {(question_id, sample) for question_id, sample in rows}

    def settings_hashes(self, model: str, task: str, split: str) -> set[str]:
        """The distinct generation settings hashes stored for one model, task and split."""
        rows = self._conn.execute(
            "SELECT DISTINCT settings_hash FROM samples "
            "WHERE model = ? AND task = ? AND split = ? AND settings_hash IS NOT NULL",
            (model, task, split),
        )
        return {settings_hash for (settings_hash,) in rows}

    # Questions

    def add_questions(
        self, task: str, split: str, questions: Iterable[tuple[str, str, str]]
    ) -> int:
        """Store (question_id, text, reference) triples; returns how many were new.

        A question already stored with the same text and reference (ignoring
        surrounding whitespace) is skipped. One stored with a different text or
        reference raises :class:`StoreError` and nothing of the call is written:
        its samples would be mistaken for answers to the other question.
        """
        with self._write():
            new = 0
            for question_id, text, reference in questions:
                stored = self._conn.execute(
                    "SELECT text, reference FROM questions "
                    "WHERE task = ? AND split = ? AND question_id = ?",
                    (task, split, question_id),
                ).fetchone()
                if stored is None:
                    self._conn.execute(
                        "INSERT INTO questions (task, split, question_id, text, reference) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (task, split, question_id, text, reference),
                    )
                    new += 1
                elif (stored[0].strip(), stored[1].strip()) != (text.strip(), reference.strip()):
                    raise StoreError(
                        f"{self.path}: question {question_id!r} ({task}, {split}) is stored "
                        "with a different text or reference; use another --store"
                    )
            return new

    def question_texts(self, task: str, split: str) -> dict[str, str]:
        """Every stored question text of ``task`` and ``split``, by question id."""
        rows = self._conn.execute(
            "SELECT question_id, text FROM questions WHERE task = ? AND split = ?", (task, split)
        )
        return {str(qid): str(text) for qid, text in rows}

    def question_text(self, task: str, split: str, question_id: str) -> str | None:
        """The stored text of a question, or ``None`` when it is not stored."""
        row = self._conn.execute(
            "SELECT text FROM questions WHERE task = ? AND split = ? AND question_id = ?",
            (task, split, question_id),
        ).fetchone()
        return None if row is None else str(row[0])

    # Failures

    def record_failure(
        self, model: str, task: str, question_id: str, split: str, error: str
    ) -> None:
        """Note that collecting ``question_id`` from ``model`` failed with ``error``."""
        with self._write():
            self._conn.execute(
                "INSERT INTO failures (model, task, question_id, split, error, attempts, last_at) "
                "VALUES (?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (model, task, split, question_id) "
                "DO UPDATE SET error = excluded.error, attempts = attempts + 1, "
                "last_at = excluded.last_at",
                (model, task, question_id, split, error, utc_now()),
            )

    def clear_failure(self, model: str, task: str, question_id: str, split: str) -> None:
        """Forget the failure of one question for one model (after it succeeded)."""
        with self._write():
            self._conn.execute(
                "DELETE FROM failures "
                "WHERE model = ? AND task = ? AND question_id = ? AND split = ?",
                (model, task, question_id, split),
            )

    def failures(
        self,
        *,
        model: str | None = None,
        task: str | None = None,
        split: str | None = None,
    ) -> list[Failure]:
        """Recorded failures, ordered by model, task, split, question_id."""
        where, params = _where(model=model, task=task, split=split)
        rows = self._conn.execute(
            "SELECT model, task, question_id, split, error, attempts, last_at FROM failures "
            f"{where} ORDER BY model, task, split, question_id",
            params,
        )
        return [Failure(*row) for row in rows]
