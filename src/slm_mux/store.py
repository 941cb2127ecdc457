"""The sample store: one SQLite file (WAL mode) holding every sample ever collected.

Tables:

- ``samples``: one row per sample, keyed by (model, task, split, question_id,
  sample); ``correct`` is always the task grader's verdict, computed when the
  row is written (an imported verdict never overrides it);
- ``questions``: question text and reference per (task, split, question_id),
  for reports; an id is never stored for two different questions;
- ``failures``: questions whose collection failed, with the last error;
- ``calls``: every model call of a live comparison (``slm-mux compare``), keyed
  by (method, config_hash, task, split, question_id, step, model), with its
  prompt messages and reply texts (JSON), tokens, latency and requests sent;
- ``method_runs``: per compared method and question set, the accumulated wall
  time of the runs that sent requests and the latest result (JSON);
- ``replica_stats``: per model and server (replica), the requests, failed
  attempts and cooldowns of the model's latest collection;
- ``schema_version``: one integer, :data:`SCHEMA_VERSION`; an older store is
  upgraded by the numbered :data:`_MIGRATIONS` when opened for writing.

Several processes may write to one store at once: every write is one
``BEGIN IMMEDIATE`` transaction and waits for the others (busy timeout).
Every SQLite error, on any call, becomes one :class:`StoreError` line naming
the file (a damaged file reads "database disk image is malformed"). A store
whose file or folder cannot be written is opened read-only, without WAL
files, and refuses writes with one line.

An import goes through a :class:`Staging` file first: every sample of every
file is validated and checked against the others there, then
:meth:`Store.import_staged` checks it against the store and writes all of it
in one transaction, or nothing. Another store is merged the same way
(:func:`stage_store`): its samples, questions, failures and compare records.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, fields
from dataclasses import replace as replace_fields
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from slm_mux.columns import SampleColumns
from slm_mux.errors import InputError, StoreError
from slm_mux.sample import SPLITS, Sample
from slm_mux.tasks import graded

SCHEMA_VERSION = 4
"""Version of the table layout this code reads and writes."""

BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's transaction to finish."""

_CALL_TABLES = (
    """CREATE TABLE IF NOT EXISTS calls (
        method TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        task TEXT NOT NULL,
        split TEXT NOT NULL,
        question_id TEXT NOT NULL,
        step TEXT NOT NULL,
        model TEXT NOT NULL,
        n INTEGER NOT NULL CHECK (n >= 1),
        messages TEXT NOT NULL,
        replies TEXT NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        latency_s REAL NOT NULL,
        requests INTEGER NOT NULL CHECK (requests >= 1),
        created_at TEXT NOT NULL,
        PRIMARY KEY (method, config_hash, task, split, question_id, step, model)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS method_runs (
        method TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        task TEXT NOT NULL,
        split TEXT NOT NULL,
        questions_hash TEXT NOT NULL,
        wall_s REAL NOT NULL DEFAULT 0,
        result TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (method, config_hash, task, split, questions_hash)
    ) WITHOUT ROWID""",
)
"""The tables of live comparisons (schema version 3; a migration may meet them made)."""

_REPLICA_TABLE = """CREATE TABLE IF NOT EXISTS replica_stats (
    model TEXT NOT NULL,
    url TEXT NOT NULL,
    position INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    cooldowns INTEGER NOT NULL,
    collected_at TEXT NOT NULL,
    PRIMARY KEY (model, url)
) WITHOUT ROWID"""
"""Per-replica counters of each model's latest collection (schema version 4)."""

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
    *_CALL_TABLES,
    _REPLICA_TABLE,
)

_COLUMNS = tuple(field.name for field in fields(Sample))
_SAMPLE_COLUMNS = ", ".join(_COLUMNS)
_SAMPLE_ORDER = "ORDER BY model, task, split, question_id, sample"
_INSERT_SAMPLE = (
    f"INSERT INTO samples ({_SAMPLE_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT DO NOTHING"
)
_KEY = ("model", "task", "split", "question_id", "sample")
REQUIRED_COLUMNS = ("model", "task", "split", "question_id", "reference", "sample", "answer")
"""The :class:`Sample` columns every staged row gives, in this order."""
_BATCH = 50_000
"""Staged rows bound per ``executemany``."""

_Filter = str | Sequence[str] | None


def utc_now() -> str:
    """The current time as UTC ISO-8601, the format of ``created_at``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def verdict(task: str, answer: str | None, reference: str) -> bool | None:
    """The grader's verdict, the only one the store keeps; ``None`` for an unknown task."""
    try:
        return graded(task, answer, reference)
    except InputError:
        return None


def _strip(text: str | None) -> str | None:
    """``str.strip`` for SQL: texts and references compare without surrounding whitespace."""
    return None if text is None else text.strip()


def _shown(value: object) -> str:
    """A stored value in an error message: ``repr``, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Every SQLite error becomes one StoreError line naming the file.


def _store_error(path: object, error: sqlite3.Error) -> StoreError:
    reason = str(error)
    if "readonly" in reason:
        reason = f"cannot write ({reason})"
    return StoreError(f"{path}: {reason}")


class _Cursor(sqlite3.Cursor):
    """A cursor whose SQLite errors, while running or fetching, are :class:`StoreError`."""

    store_path: Path

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as error:
            raise _store_error(self.store_path, error) from None

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> _Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.Error as error:
            raise _store_error(self.store_path, error) from None

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.Error as error:
            raise _store_error(self.store_path, error) from None

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.Error as error:
            raise _store_error(self.store_path, error) from None

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        try:
            return super().fetchmany(size)
        except sqlite3.Error as error:
            raise _store_error(self.store_path, error) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.Error as error:
            raise _store_error(self.store_path, error) from None


class _Connection(sqlite3.Connection):
    """The store's connection: every statement runs on a :class:`_Cursor`."""

    store_path: Path

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        cursor = self.cursor(_Cursor)
        cursor.store_path = self.store_path
        return cursor.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> _Cursor:
        cursor = self.cursor(_Cursor)
        cursor.store_path = self.store_path
        return cursor.executemany(sql, parameters)


def _connect(path: Path, uri: str) -> _Connection:
    """A guarded connection to ``uri`` (a ``file:`` URI for ``path``), with ``strip`` in SQL."""
    try:
        conn = sqlite3.connect(
            uri, timeout=BUSY_TIMEOUT_S, isolation_level=None, uri=True, factory=_Connection
        )
    except sqlite3.Error as error:
        raise StoreError(f"{path}: cannot open ({error})") from None
    conn.store_path = path
    conn.create_function("strip", 1, _strip, deterministic=True)
    conn.create_function("verdict", 3, verdict, deterministic=True)
    return conn


def _writable(path: Path) -> bool:
    """Whether this process may write ``path`` and create files beside it (the WAL files)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


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


@dataclass(frozen=True)
class ImportReport:
    """What :meth:`Store.import_staged` did.

    ``read`` samples were staged; ``new`` samples were added and ``replaced``
    overwritten (``--replace``);
    ``regraded`` samples came with a ``correct`` that the grader contradicts
    (the grader's verdict was stored), the first of them at ``first_regraded``.
    From merged stores, ``failures`` failed questions were added and
    ``records`` compare records (by kind) added or replaced.
    """

    read: int
    new: int
    replaced: int
    regraded: int
    first_regraded: str | None
    failures: int = 0
    records: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaRecord:
    """One server's counters in a model's latest collection: requests sent, failed
    attempts, cooldowns begun; ``position`` is its place in the pool file's list."""

    model: str
    url: str
    position: int
    requests: int
    errors: int
    cooldowns: int
    collected_at: str


@dataclass(frozen=True)
class RecordedCall:
    """One recorded model call of a live comparison (a row of the ``calls`` table).

    ``step`` names the call within its question's transcript (``"round2"``,
    ``"aggregate"``, ...); ``messages`` is the prompt, ``replies`` the ``n``
    reply texts; tokens are the sums the servers reported (``None`` when
    unknown) and ``requests`` the responses received for the call.
    """

    method: str
    config_hash: str
    task: str
    split: str
    question_id: str
    step: str
    model: str
    n: int
    messages: list[dict[str, str]]
    replies: list[str]
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    requests: int
    created_at: str = ""


@dataclass(frozen=True)
class MethodRun:
    """A compared method on one question set: its config, accumulated wall time, result.

    ``result`` is the JSON of the method's latest table row (``None`` until
    its first run finished).
    """

    method: str
    config_hash: str
    task: str
    split: str
    questions_hash: str
    wall_s: float
    result: dict[str, Any] | None
    updated_at: str


_CallKey = tuple[str, str, str]
"""A recorded call within a method configuration: (question_id, step, model)."""
RunKey = tuple[str, str, str, str, str]
"""A method run: (method, config_hash, task, split, questions_hash)."""
_CALL_FIELDS = tuple(field.name for field in fields(RecordedCall))
_CALL_COLUMNS = ", ".join(_CALL_FIELDS)
_RUN_MATCH = "method = ? AND config_hash = ? AND task = ? AND split = ? AND questions_hash = ?"


def _call_from_row(row: Sequence[Any]) -> RecordedCall:
    values = dict(zip(_CALL_FIELDS, row, strict=True))
    values["messages"] = json.loads(values["messages"])
    values["replies"] = json.loads(values["replies"])
    return RecordedCall(**values)


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
    """The column values of ``sample``: graded, stamped with ``created_at`` if it has none."""
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
    values["correct"] = verdict(sample.task, sample.answer, sample.reference)
    values["created_at"] = sample.created_at or created_at
    return tuple(values.values())


def _sample_from_row(row: Sequence[Any]) -> Sample:
    values = dict(zip(_COLUMNS, row, strict=True))
    if values["correct"] is not None:
        values["correct"] = bool(values["correct"])
    return Sample(**values)


def _regrade(conn: _Connection) -> None:
    """Migration 1 -> 2: store the grader's verdict wherever an imported one contradicts it."""
    conn.execute(
        "UPDATE samples SET correct = verdict(task, answer, reference) "
        "WHERE correct IS NOT verdict(task, answer, reference)"
    )


def _add_call_tables(conn: _Connection) -> None:
    """Migration 2 -> 3: the tables of live comparisons."""
    for statement in _CALL_TABLES:
        conn.execute(statement)


def _add_replica_table(conn: _Connection) -> None:
    """Migration 3 -> 4: per-replica counters of collections."""
    conn.execute(_REPLICA_TABLE)


_MIGRATIONS: dict[int, Callable[[_Connection], None]] = {
    1: _regrade,
    2: _add_call_tables,
    3: _add_replica_table,
}
"""Migration ``n`` turns a version ``n`` store into version ``n + 1``."""


@dataclass(frozen=True)
class _Records:
    """A table of compare records that a merge carries: a record under a stored key must
    agree on ``compared`` (as a sample on its answer) or ``--replace`` overwrites it."""

    table: str
    what: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    compared: tuple[str, ...]

    def describe(self, key: Sequence[object]) -> str:
        """The record named by its key values."""
        named = ", ".join(
            f"{name} {_shown(value)}" for name, value in zip(self.key, key, strict=True)
        )
        return f"{self.what} ({named})"


_RECORDS = (
    _Records("calls", "compare call", _CALL_FIELDS, _CALL_FIELDS[:7], ("n", "messages", "replies")),
    _Records(
        "method_runs",
        "method run",
        tuple(field.name for field in fields(MethodRun)),
        ("method", "config_hash", "task", "split", "questions_hash"),
        ("result",),
    ),
)
"""The compare tables a merge carries, checked like samples."""

_STAGED_FROM = {"model": "l", "task": "l", "question_id": "l", "split": "l", "reference": "r"}
_STAGED_COLUMNS = ", ".join(f"{_STAGED_FROM.get(column, 's')}.{column}" for column in _COLUMNS)
_STAGING_SCHEMA = (
    "PRAGMA journal_mode = OFF",
    "PRAGMA synchronous = OFF",
    "PRAGMA cache_size = -131072",  # 128 MiB
    "CREATE TABLE slots (id INTEGER PRIMARY KEY, model, task, split, question_id)",
    "CREATE TABLE refs (id INTEGER PRIMARY KEY, task, split, question_id, reference, origin)",
    f"CREATE TABLE samples (slot INTEGER, sample INTEGER, ref INTEGER, given, "
    f"{', '.join(c for c in _COLUMNS if c not in _STAGED_FROM and c != 'sample')}, "
    "origin INTEGER)",
    "CREATE TABLE repeats (slot INTEGER, sample INTEGER, answer, origin INTEGER)",
    "CREATE INDEX repeat_keys ON repeats (slot, sample)",
    "CREATE TABLE questions (task, split, question_id, text, reference, origin)",
    "CREATE TABLE failures (model, task, question_id, split, error, attempts, last_at, "
    "PRIMARY KEY (model, task, split, question_id))",
    *(f"CREATE TABLE {r.table} ({', '.join(r.columns)}, origin INTEGER)" for r in _RECORDS),
    *(f"CREATE INDEX {r.table}_keys ON {r.table} ({', '.join(r.key)})" for r in _RECORDS),
    f"CREATE VIEW staged AS SELECT {_STAGED_COLUMNS}, s.given, s.origin "
    "FROM samples s JOIN slots l ON l.id = s.slot JOIN refs r ON r.id = s.ref",
)
"""The staging file: samples name their (model, task, split, question) slot and their
reference by number; the view ``staged`` gives them back with every :class:`Sample` column.
A sample whose key was staged before goes to ``repeats``, for :meth:`Staging.check`."""

_SEEN_BITS = 1 << 10
"""Sample numbers below this are noted as bits of one integer per slot; others in a set."""

_Group = tuple[int, int, dict[str | None, bool | None]]
"""A staged (model, task, split, question, reference): slot, reference number, and the
verdicts of the answers met so far."""


def _other_settings(model: str, task: str, split: str, than: str) -> str:
    """Why samples drawn with other generation settings than ``than`` are refused."""
    return (
        f"model {model!r} has {split} samples ({task}) drawn with other generation settings "
        f"(model, temperature, max_tokens or seed) than {than}; nothing imported "
        "(collect one model name with one set of settings)"
    )


class Staging:
    """The samples and questions of one import, validated and checked against each other.

    Rows live in a private temporary SQLite file, not in memory, and reach a
    store only through :meth:`Store.import_staged`. Each row remembers where it
    came from (``origin``: the file's number and a line or response index), so
    every conflict names ``file:line``. A key staged twice with the same answer
    is kept once; with another answer :meth:`check` refuses it.

    Names and references are staged once each and samples refer to them by
    number, so a sample binds few values. What stays in memory grows with the
    questions and their distinct answers: the slots, the references (a question
    id given two references is found here), the question texts, the verdicts,
    and per slot one bit for each sample number staged (a set entry for numbers
    from 1024), which finds a key staged twice without an index.
    """

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="slm-mux-import-")
        self.path = Path(self._folder.name) / "staging.db"
        self._conn = _connect(self.path, self.path.as_uri())
        for statement in _STAGING_SCHEMA:
            self._conn.execute(statement)
        self._sources: list[tuple[str, str]] = []
        self._groups: dict[tuple[Any, ...], _Group] = {}
        self._slots: dict[tuple[str, ...], int] = {}
        self._references: dict[tuple[str, ...], int] = {}
        self._verdicts: list[dict[str | None, bool | None]] = []
        self._first_reference: dict[tuple[str, ...], tuple[str, int]] = {}
        self._texts: dict[tuple[str, ...], tuple[str, int]] = {}
        self._new_slots: list[tuple[object, ...]] = []
        self._new_references: list[tuple[object, ...]] = []
        self._clashes: dict[str, tuple[int, str]] = {}
        self._seen: list[int] = []
        self._seen_far: set[tuple[int, int]] = set()
        self._repeats: list[tuple[int, int, str | None, int]] = []
        self._repeated = 0
        self._settings_given = False
        self.read = 0
        self.regraded = 0
        self.first_regraded: str | None = None

    def source(self, name: str, unit: str = "line") -> int:
        """Register a file; returns the base of its origins (add a line or response index).

        ``unit`` is ``"line"`` (shown ``file:N``), ``"response"`` (``file: responses[N]``)
        or ``"store"`` (a merged store, shown by its name: its rows have no address).
        """
        self._sources.append((name, unit))
        return (len(self._sources) - 1) << 32

    def where(self, origin: int) -> str:
        """The ``file:line`` (or ``file: responses[i]``) of an origin."""
        name, unit = self._sources[origin >> 32]
        position = origin & 0xFFFFFFFF
        if unit == "store":
            return name
        return f"{name}:{position}" if unit == "line" else f"{name}: responses[{position}]"

    def add_samples(self, rows: Iterable[tuple[tuple[str, ...], tuple[Any, ...]]]) -> None:
        """Stage samples in one transaction, graded.

        A row is (the optional :class:`Sample` columns it gives, its values): the
        values of :data:`REQUIRED_COLUMNS`, then of those optional columns (an
        imported ``correct`` among them), then the origin. Only given values are
        bound, which is most of the time an import takes.
        """
        groups, seen, seen_far, bits = self._groups, self._seen, self._seen_far, _SEEN_BITS
        plain: list[tuple[object, ...]] = []
        batches: dict[tuple[str, ...], list[tuple[object, ...]]] = {(): plain}
        key: tuple[Any, ...] = ()
        self._conn.execute("BEGIN")
        try:
            for optional, values in rows:
                head = values[:5]
                if head != key:  # the samples of one model and question mostly come together
                    key = head
                    slot, ref, verdicts = groups.get(key) or self._group(values)
                number, answer = values[5], values[6]
                if number < bits:
                    bit = 1 << number
                    if seen[slot] & bit:
                        self._repeat(slot, number, answer, values[-1])
                        continue
                    seen[slot] |= bit
                elif (slot, number) in seen_far:
                    self._repeat(slot, number, answer, values[-1])
                    continue
                else:
                    seen_far.add((slot, number))
                try:
                    correct = verdicts[answer]
                except KeyError:
                    correct = verdicts[answer] = verdict(values[1], answer, values[4])
                if optional:
                    self._note_given(optional, values, correct)
                    batch = batches.setdefault(optional, [])
                    batch.append((slot, number, ref, answer, correct, *values[7:]))
                else:
                    batch = plain
                    plain.append((slot, number, ref, answer, correct, values[7]))
                if len(batch) >= _BATCH:
                    self._insert(optional, batch)
            for optional, batch in batches.items():
                self._insert(optional, batch)
            self._insert_repeats()
            self._stage_names()
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _group(self, values: tuple[Any, ...]) -> _Group:
        """Register the slot and reference of a row whose (model, task, split, question,
        reference) is new."""
        model, task, split, question_id, reference = key = values[:5]
        slot_key = (model, task, split, question_id)
        slot = self._slots.get(slot_key)
        if slot is None:
            slot = self._slots[slot_key] = len(self._slots)
            self._new_slots.append((slot, *slot_key))
            self._seen.append(0)
        ref = self._reference((task, split, question_id), reference, values[-1])
        group = self._groups[key] = (slot, ref, self._verdicts[ref])
        return group

    def _reference(self, question: tuple[str, str, str], reference: str, origin: int) -> int:
        """The number of ``question``'s ``reference``; notes a reference that differs
        from the question's first one (ignoring surrounding whitespace)."""
        key = (*question, reference)
        ref = self._references.get(key)
        if ref is None:
            ref = self._references[key] = len(self._references)
            self._verdicts.append({})
            self._new_references.append((ref, *key, origin))
            first, first_origin = self._first_reference.setdefault(question, (reference, origin))
            if first.strip() != reference.strip():
                task, split, question_id = question
                self._clash(
                    "reference",
                    origin,
                    f"question {question_id!r} ({task}, {split}) has reference "
                    f"{_shown(reference)}, but {_shown(first)} at {self.where(first_origin)}; "
                    "a question id names one question",
                )
        return ref

    def _clash(self, kind: str, origin: int, message: str) -> None:
        """Note a contradiction of ``kind`` at ``origin``; :meth:`check` raises the first."""
        self._clashes.setdefault(kind, (origin, message))

    def _stage_names(self) -> None:
        """Write the slots and references registered since the last call."""
        self._conn.executemany("INSERT INTO slots VALUES (?, ?, ?, ?, ?)", self._new_slots)
        self._conn.executemany("INSERT INTO refs VALUES (?, ?, ?, ?, ?, ?)", self._new_references)
        self._new_slots.clear()
        self._new_references.clear()

    def _insert(self, optional: tuple[str, ...], batch: list[tuple[object, ...]]) -> None:
        """Stage and empty one batch of rows that give the same ``optional`` columns."""
        self.read += len(batch)
        self._settings_given |= "settings_hash" in optional
        names = ["slot", "sample", "ref", "answer", "correct"]
        names += ["given" if name == "correct" else name for name in optional]
        names.append("origin")
        self._conn.executemany(
            f"INSERT INTO samples ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            batch,
        )
        batch.clear()

    def _repeat(self, slot: int, number: int, answer: str | None, origin: int) -> None:
        """Note a sample whose key was staged before, for :meth:`check` to compare."""
        self._repeats.append((slot, number, answer, origin))
        self._repeated += 1
        self.read += 1
        if len(self._repeats) >= _BATCH:
            self._insert_repeats()

    def _insert_repeats(self) -> None:
        """Stage and empty the noted repeats."""
        self._conn.executemany("INSERT INTO repeats VALUES (?, ?, ?, ?)", self._repeats)
        self._repeats.clear()

    def _note_given(
        self, optional: tuple[str, ...], values: tuple[Any, ...], correct: object
    ) -> None:
        """Count an imported ``correct`` that the grader's verdict contradicts."""
        if "correct" in optional and values[7 + optional.index("correct")] is not correct:
            self.regraded += 1
            if self.first_regraded is None:
                self.first_regraded = self.where(values[-1])

    def add_questions(
        self, task: str, split: str, rows: Iterable[tuple[str, str, str, int]]
    ) -> None:
        """Stage (question_id, text, reference, origin) of questions with a text."""
        new: list[tuple[object, ...]] = []
        for question_id, text, reference, origin in rows:
            question = (task, split, question_id)
            self._reference(question, reference, origin)
            known = self._texts.get(question)
            if known is None:
                self._texts[question] = (text, origin)
                new.append((*question, text, reference, origin))
            elif known[0].strip() != text.strip():
                self._clash(
                    "text",
                    origin,
                    f"question {question_id!r} ({task}, {split}) has text {_shown(text)}, "
                    f"but {_shown(known[0])} at {self.where(known[1])}",
                )
        self._conn.execute("BEGIN")
        self._conn.executemany("INSERT INTO questions VALUES (?, ?, ?, ?, ?, ?)", new)
        self._stage_names()
        self._conn.execute("COMMIT")

    def samples(self) -> list[Sample]:
        """The staged samples in the order first read, graded."""
        rows = self._conn.execute(f"SELECT {_SAMPLE_COLUMNS} FROM staged ORDER BY origin, sample")
        return [_sample_from_row(row) for row in rows]

    def count(self) -> int:
        """Number of distinct samples staged."""
        return int(self._conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def check(self) -> None:
        """Raise :class:`InputError` at the first record that contradicts an earlier one:
        a sample with another answer, a question id with another text or reference, a
        model's samples of one task and split drawn with two generation settings, or a
        compare record with other replies or result."""
        row = (
            self._repeated
            and self._conn.execute(
                "SELECT l.model, l.task, l.split, l.question_id, s.sample, s.answer, s.origin, "
                "r.answer, r.origin FROM repeats r JOIN samples s USING (slot, sample) "
                "JOIN slots l ON l.id = s.slot "
                "WHERE s.answer IS NOT r.answer ORDER BY r.origin LIMIT 1"
            ).fetchone()
        )
        if row:
            model, task, split, qid, number, answer, origin, clash_answer, clash = row
            raise InputError(
                f"{self.where(clash)}: sample {number} of {model!r} on question {qid!r} "
                f"({task}, {split}) has answer {_shown(clash_answer)}, but "
                f"{_shown(answer)} at {self.where(origin)}"
            )
        for kind in ("text", "reference"):
            if kind in self._clashes:
                origin, message = self._clashes[kind]
                raise InputError(f"{self.where(origin)}: {message}")
        self._check_settings()
        self._check_records()

    def add_failures(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Stage failures of a merged store (the first staged for a key stays)."""
        self._conn.execute("BEGIN")
        self._conn.executemany(
            "INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows
        )
        self._conn.execute("COMMIT")

    def add_records(self, records: _Records, rows: Iterable[Sequence[object]]) -> None:
        """Stage compare records of a merged store: their columns, then their origin."""
        marks = ", ".join("?" * (len(records.columns) + 1))
        self._conn.execute("BEGIN")
        self._conn.executemany(f"INSERT INTO {records.table} VALUES ({marks})", rows)
        self._conn.execute("COMMIT")

    def _check_records(self) -> None:
        """Raise at the first staged compare record that disagrees with an earlier one."""
        for records in _RECORDS:
            differ = " OR ".join(f"a.{c} IS NOT b.{c}" for c in records.compared)
            row = self._conn.execute(
                f"SELECT b.origin, a.origin, {', '.join(f'b.{c}' for c in records.key)} "
                f"FROM {records.table} a JOIN {records.table} b USING ({', '.join(records.key)}) "
                f"WHERE a.origin < b.origin AND ({differ}) ORDER BY b.origin, a.origin LIMIT 1"
            ).fetchone()
            if row is not None:
                raise InputError(
                    f"{self.where(row[0])}: {records.describe(row[2:])} has other "
                    f"{' or '.join(records.compared)} than at {self.where(row[1])}"
                )

    def _check_settings(self) -> None:
        """Raise at the first model whose staged samples of one task and split were drawn
        with two generation settings."""
        first: dict[tuple[str, str, str], tuple[str, int]] = {}
        for model, task, split, settings, origin in self.settings():
            seen, seen_at = first.setdefault((model, task, split), (settings, origin))
            if seen != settings:
                than = f"at {self.where(seen_at)}"
                reason = _other_settings(model, task, split, than)
                raise InputError(f"{self.where(origin)}: {reason}")

    def settings(self) -> list[tuple[str, str, str, str, int]]:
        """(model, task, split, settings hash, first origin) of every staged settings hash."""
        if not self._settings_given:
            return []
        rows = self._conn.execute(
            "SELECT l.model, l.task, l.split, s.settings_hash, MIN(s.origin) "
            "FROM samples s JOIN slots l ON l.id = s.slot WHERE s.settings_hash IS NOT NULL "
            "GROUP BY 1, 2, 3, 4 ORDER BY 5"
        )
        return [tuple(row) for row in rows]

    def close(self) -> None:
        """Close and delete the staging file."""
        self._conn.close()
        self._folder.cleanup()

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# Merge

SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite file."""

_MERGED_OPTIONAL = (
    "text",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "finish_reason",
    "settings_hash",
    "created_at",
)
"""The optional :class:`Sample` columns a merge carries (``correct`` is graded again)."""


def is_store_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an SQLite file (by its header), so a store to merge."""
    try:
        with open(path, "rb") as stream:
            return stream.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


@contextmanager
def _read_source(path: Path, copy: Path) -> Iterator[Store]:
    """``path`` opened read-only; a store of an older schema version is copied to ``copy``
    (deleted afterwards) and upgraded there, so the file itself is never written."""
    uri = path.absolute().as_uri() + "?mode=ro"
    try:
        source = Store(path, readonly=True)
    except StoreError:
        try:
            with closing(_connect(path, uri)) as conn:
                row = conn.execute("SELECT version FROM schema_version").fetchone()
        except StoreError:
            row = None
        if row is None or row[0] not in _MIGRATIONS:
            raise
        with closing(_connect(path, uri)) as conn, closing(_connect(copy, copy.as_uri())) as to:
            conn.backup(to)
        source = Store(copy)
    try:
        yield source
    finally:
        source.close()
        copy.unlink(missing_ok=True)


def stage_store(staging: Staging, path: str | os.PathLike[str]) -> int:
    """Stage every sample, question and failure of another store; returns the samples read.

    The store is opened read-only and never written; one of an older schema
    version is read from an upgraded copy. Its samples pass through the same
    checks as a file's (graded again, references and texts against each
    other); so do its compare records (``calls``, ``method_runs``): one under
    a key staged or stored before must agree with it.
    """
    name = str(path)
    with _read_source(Path(path), staging.path.with_name("upgraded.db")) as source:
        base = staging.source(name, "store")
        before = staging.read
        columns = ", ".join((*REQUIRED_COLUMNS, *_MERGED_OPTIONAL))
        rows = source._conn.execute(f"SELECT {columns} FROM samples {_SAMPLE_ORDER}")
        staging.add_samples((_MERGED_OPTIONAL, (*row, base + i)) for i, row in enumerate(rows))
        position = base + staging.read - before
        questions: dict[tuple[str, str], list[tuple[str, str, str, int]]] = {}
        for task, split, qid, text, reference in source._conn.execute(
            "SELECT task, split, question_id, text, reference FROM questions "
            "ORDER BY task, split, question_id"
        ):
            questions.setdefault((task, split), []).append((qid, text, reference, position))
            position += 1
        for (task, split), rows_of in questions.items():
            staging.add_questions(task, split, rows_of)
        staging.add_failures(
            source._conn.execute(
                "SELECT model, task, question_id, split, error, attempts, last_at FROM failures "
                "ORDER BY model, task, split, question_id"
            ).fetchall()
        )
        for records in _RECORDS:
            found = source._conn.execute(
                f"SELECT {', '.join(records.columns)} FROM {records.table} "
                f"ORDER BY {', '.join(records.key)}"
            ).fetchall()
            staging.add_records(records, [(*row, position + i) for i, row in enumerate(found)])
            position += len(found)
    return staging.read - before


class Store:
    """A sample store in one SQLite file; use as a context manager or call :meth:`close`.

    With ``create=False`` the file must already be a store. With
    ``readonly=True``, or when this process may not write the file or its
    folder, the store is opened read-only: reading needs no WAL files (an
    ``immutable`` open is the fallback when they cannot be made) and every
    write raises :class:`StoreError`. A file that is not SQLite, is damaged,
    or is not a store of a version this code reads raises :class:`StoreError`
    naming it.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False
    ) -> None:
        self.path = Path(path)
        exists = self.path.exists()
        if not exists and (readonly or not create):
            raise StoreError(f"{self.path}: no such store")
        self.readonly = readonly or (exists and not _writable(self.path))
        if self.readonly:
            self._conn = self._open_readonly()
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(f"{self.path}: cannot create ({error.strerror})") from None
            self._conn = _connect(self.path, self.path.absolute().as_uri())
        try:
            self._prepare(create)
        except BaseException:
            self._conn.close()
            raise

    def _open_readonly(self) -> _Connection:
        """A read-only connection; ``immutable`` when the WAL files cannot be opened or made."""
        uri = self.path.absolute().as_uri() + "?mode=ro"
        conn = _connect(self.path, uri)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except StoreError:
            conn.close()
            conn = _connect(self.path, uri + "&immutable=1")
        return conn

    def _prepare(self, create: bool) -> None:
        """Check the file is a store (or, with ``create``, empty), switch to WAL, make tables,
        upgrade an older store."""
        tables = self._tables()
        if "schema_version" not in tables and (tables or not create):
            raise StoreError(f"{self.path}: not a sample store (no schema_version table)")
        if self.readonly:
            self._check_version(self._version())
            return
        self._use_wal()
        self._conn.execute("PRAGMA synchronous = NORMAL")
        if not tables:
            self._create_tables()
        self._migrate()

    def _tables(self) -> set[str]:
        try:
            rows = self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {name for (name,) in rows}
        except StoreError as error:
            raise StoreError(f"{error} (not a sample store?)") from None

    def _use_wal(self) -> None:
        """Turn on WAL mode; the switch ignores the busy timeout, so retry until it passes."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except StoreError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _create_tables(self) -> None:
        with self._write():
            if not self._tables():  # another process may have made them meanwhile
                for statement in _SCHEMA:
                    self._conn.execute(statement)
                self._conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    def _version(self) -> int:
        versions = [v for (v,) in self._conn.execute("SELECT version FROM schema_version")]
        if len(versions) != 1:
            raise StoreError(f"{self.path}: schema_version holds {len(versions)} rows, not 1")
        if not isinstance(versions[0], int):
            raise StoreError(f"{self.path}: schema_version holds {versions[0]!r} (damaged store?)")
        return versions[0]

    def _unsupported(self, version: int) -> StoreError:
        return StoreError(
            f"{self.path}: store schema version {version}, "
            f"this slm-mux reads version {SCHEMA_VERSION}"
        )

    def _check_version(self, version: int) -> None:
        """Refuse, when reading only, any version but the current one."""
        if version in _MIGRATIONS:
            raise StoreError(
                f"{self.path}: store schema version {version} needs an upgrade to "
                f"{SCHEMA_VERSION}; open it once where it can be written"
            )
        if version != SCHEMA_VERSION:
            raise self._unsupported(version)

    def _migrate(self) -> None:
        """Run the numbered migrations from the stored version up to :data:`SCHEMA_VERSION`."""
        if self._version() == SCHEMA_VERSION:
            return
        with self._write():
            version = self._version()  # another process may have upgraded meanwhile
            while version in _MIGRATIONS:
                _MIGRATIONS[version](self._conn)
                version += 1
            if version != SCHEMA_VERSION:
                raise self._unsupported(self._version())
            self._conn.execute("UPDATE schema_version SET version = ?", (version,))

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taking the write lock up front (waits for other writers)."""
        if self.readonly:
            raise StoreError(f"{self.path}: cannot write (the file or its folder is read-only)")
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
        ``correct`` is the grader's verdict, whatever the sample says; a sample
        without ``created_at`` is stamped with the current UTC time.
        """
        now = utc_now()
        rows = [_sample_row(sample, now) for sample in samples]
        with self._write():
            before = self._conn.total_changes
            self._conn.executemany(_INSERT_SAMPLE, rows)
            return self._conn.total_changes - before

    def import_staged(self, staging: Staging, *, replace: bool = False) -> ImportReport:
        """Write everything ``staging`` holds in one transaction, or nothing.

        A staged question id whose reference (or text) differs from the stored
        one, or a staged sample whose answer differs from the stored sample
        under its key, raises :class:`StoreError` naming the file and line and
        both values; with ``replace`` such samples are overwritten instead. A
        sample stored with the same answer is left as it is.
        """
        staging.check()
        self._conn.execute("ATTACH DATABASE ? AS staging", (str(staging.path),))
        try:
            with self._write():
                self._check_staged(staging)
                stored, differing = self._conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(n.answer IS NOT s.answer), 0) "
                    f"FROM staging.staged n JOIN main.samples s USING ({', '.join(_KEY)}) "
                    "WHERE EXISTS (SELECT * FROM main.samples)"  # skips the join into a new store
                ).fetchone()
                if differing and not replace:
                    raise StoreError(self._answer_conflict(staging))
                self._check_staged_settings(staging)
                records = {r.what: self._merge_records(staging, r, replace) for r in _RECORDS}
                failures = self._merge_failures()
                report = self._insert_staged(staging, replace, stored, differing)
                return replace_fields(report, failures=failures, records=records)
        finally:
            self._conn.execute("DETACH DATABASE staging")

    # Merge

    def _check_staged_settings(self, staging: Staging) -> None:
        """Raise when a model's staged samples of one task and split were drawn with other
        generation settings than its stored ones (collect would refuse the store)."""
        for model, task, split, settings, origin in staging.settings():
            if self.settings_hashes(model, task, split) - {settings}:
                where = f"{staging.where(origin)}: "
                raise StoreError(where + _other_settings(model, task, split, f"{self.path} holds"))

    def _merge_records(self, staging: Staging, records: _Records, replace: bool) -> int:
        """Store the staged compare records of one table; returns how many were added or
        replaced. A record stored under its key with other ``compared`` values raises
        :class:`StoreError` unless ``replace``; one that agrees stays as stored."""
        columns, key = ", ".join(records.columns), ", ".join(records.key)
        differ = " OR ".join(f"n.{c} IS NOT s.{c}" for c in records.compared)
        row = self._conn.execute(
            f"SELECT n.origin, {', '.join(f'n.{c}' for c in records.key)} "
            f"FROM staging.{records.table} n JOIN main.{records.table} s USING ({key}) "
            f"WHERE {differ} ORDER BY n.origin LIMIT 1"
        ).fetchone()
        if row is not None and not replace:
            raise StoreError(
                f"{staging.where(row[0])}: {records.describe(row[1:])} is stored with other "
                f"{' or '.join(records.compared)}; nothing imported (--replace overwrites)"
            )
        update = ", ".join(f"{c} = excluded.{c}" for c in records.columns if c not in records.key)
        differs = " OR ".join(f"{records.table}.{c} IS NOT excluded.{c}" for c in records.compared)
        on_conflict = f"UPDATE SET {update} WHERE {differs}" if replace else "NOTHING"
        before = self._conn.total_changes
        self._conn.execute(
            f"INSERT INTO main.{records.table} ({columns}) SELECT {columns} "
            f"FROM staging.{records.table} ORDER BY origin ON CONFLICT DO {on_conflict}"
        )
        return self._conn.total_changes - before

    def _merge_failures(self) -> int:
        """Store the staged failures; returns how many were new. A failure is left out when
        the store already records it, or holds samples of its question (collected here)."""
        before = self._conn.total_changes
        self._conn.execute(
            "INSERT INTO main.failures SELECT * FROM staging.failures f WHERE NOT EXISTS "
            "(SELECT * FROM main.samples s WHERE s.model = f.model AND s.task = f.task "
            "AND s.split = f.split AND s.question_id = f.question_id) ON CONFLICT DO NOTHING"
        )
        return self._conn.total_changes - before

    def _check_staged(self, staging: Staging) -> None:
        """Raise at the first staged reference or question text the store contradicts.

        Stored samples are looked up by key prefix, model by model (the models
        found by a loose index scan), so the check reads the stored samples of
        the staged questions only.
        """
        row = self._conn.execute(
            "WITH RECURSIVE models (model) AS (SELECT MIN(model) FROM main.samples "
            "UNION ALL SELECT (SELECT MIN(model) FROM main.samples WHERE model > models.model) "
            "FROM models WHERE model IS NOT NULL) "
            "SELECT r.task, r.split, r.question_id, r.reference, r.origin, s.reference "
            "FROM staging.refs r CROSS JOIN models m CROSS JOIN main.samples s "
            "ON s.model = m.model AND s.task = r.task AND s.split = r.split "
            "AND s.question_id = r.question_id "
            "WHERE r.reference != s.reference AND strip(r.reference) != strip(s.reference) "
            "UNION ALL SELECT r.task, r.split, r.question_id, r.reference, r.origin, q.reference "
            "FROM staging.refs r JOIN main.questions q USING (task, split, question_id) "
            "WHERE strip(r.reference) != strip(q.reference) ORDER BY 5 LIMIT 1"
        ).fetchone()
        if row is not None:
            task, split, qid, reference, origin, stored = row
            raise StoreError(
                f"{staging.where(origin)}: question {qid!r} ({task}, {split}) has reference "
                f"{_shown(reference)}, but {self.path} holds it with reference "
                f"{_shown(stored)}; a question id names one question"
            )
        row = self._conn.execute(
            "SELECT n.task, n.split, n.question_id, n.text, n.origin, q.text "
            "FROM staging.questions n JOIN main.questions q USING (task, split, question_id) "
            "WHERE strip(n.text) != strip(q.text) ORDER BY n.origin LIMIT 1"
        ).fetchone()
        if row is not None:
            task, split, qid, text, origin, stored = row
            raise StoreError(
                f"{staging.where(origin)}: question {qid!r} ({task}, {split}) has text "
                f"{_shown(text)}, but {self.path} holds it with text {_shown(stored)}; "
                "use another --store"
            )

    def _answer_conflict(self, staging: Staging) -> str:
        """The line naming the first staged sample (in file order) stored with another answer."""
        model, task, split, qid, number, answer, stored, origin = self._conn.execute(
            "SELECT n.model, n.task, n.split, n.question_id, n.sample, n.answer, s.answer, "
            "n.origin FROM staging.staged n JOIN main.samples s "
            f"USING ({', '.join(_KEY)}) WHERE n.answer IS NOT s.answer "
            "ORDER BY n.origin, n.sample LIMIT 1"
        ).fetchone()
        return (
            f"{staging.where(origin)}: sample {number} of {model!r} on question {qid!r} "
            f"({task}, {split}) is stored with answer {_shown(stored)}, this file says "
            f"{_shown(answer)}; nothing imported (--replace overwrites)"
        )

    def _insert_staged(
        self, staging: Staging, replace: bool, stored: int, differing: int
    ) -> ImportReport:
        """Write the staged samples (``stored`` of them are already stored under their key,
        ``differing`` of those with another answer) and questions."""
        before = self._conn.total_changes
        if stored < staging.count() or (replace and differing):
            update = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in _KEY)
            on_conflict = (
                f"UPDATE SET {update} WHERE samples.answer IS NOT excluded.answer"
                if replace
                else "NOTHING"
            )
            stamped = _SAMPLE_COLUMNS.replace("created_at", "coalesce(created_at, ?)")
            self._conn.execute(
                f"INSERT INTO main.samples ({_SAMPLE_COLUMNS}) "
                f"SELECT {stamped} FROM staging.staged WHERE true ON CONFLICT DO {on_conflict}",
                (utc_now(),),
            )
        changed = self._conn.total_changes - before
        self._conn.execute(
            "INSERT INTO main.questions SELECT task, split, question_id, text, reference "
            "FROM staging.questions WHERE true ON CONFLICT DO NOTHING"
        )
        return ImportReport(
            read=staging.read,
            new=changed - differing,
            replaced=differing,
            regraded=staging.regraded,
            first_regraded=staging.first_regraded,
        )

    def samples(
        self,
        *,
        split: str | None = None,
        models: Sequence[str] | None = None,
        task: str | None = None,
    ) -> list[Sample]:
        """Stored samples, ordered by model, task, split, question_id, sample."""
        return list(self.each_sample(split=split, models=models, task=task))

    def each_sample(
        self,
        *,
        split: str | None = None,
        models: Sequence[str] | None = None,
        task: str | None = None,
    ) -> Iterator[Sample]:
        """Stored samples one at a time (for streaming), in the order of :meth:`samples`."""
        where, params = _where(split=split, model=models, task=task)
        rows = self._conn.execute(
            f"SELECT {_SAMPLE_COLUMNS} FROM samples {where} {_SAMPLE_ORDER}", params
        )
        return (_sample_from_row(row) for row in rows)

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

    # Replicas

    def save_replica_stats(self, model: str, records: Sequence[tuple[str, int, int, int]]) -> None:
        """Replace ``model``'s per-replica counters with ``records``, each ``(url, requests,
        errors, cooldowns)`` in pool-file order, stamped now."""
        now = utc_now()
        with self._write():
            self._conn.execute("DELETE FROM replica_stats WHERE model = ?", (model,))
            self._conn.executemany(
                "INSERT INTO replica_stats (model, url, position, requests, errors, cooldowns, "
                "collected_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(model, url, i, *counts, now) for i, (url, *counts) in enumerate(records)],
            )

    def replica_stats(self) -> list[ReplicaRecord]:
        """Every model's per-replica counters, by model, then pool-file order."""
        rows = self._conn.execute(
            "SELECT model, url, position, requests, errors, cooldowns, collected_at "
            "FROM replica_stats ORDER BY model, position"
        )
        return [ReplicaRecord(*row) for row in rows]

    # Arrays

    def sample_columns(
        self, splits: Sequence[str], tasks: Sequence[str] | None = None
    ) -> dict[str, SampleColumns]:
        """The samples of ``tasks`` (default: all) in each of ``splits`` as columns, for analysis.

        One query reads one row per (model, task, split, question) in the table's
        key order, with the row's sample numbers and answers in the same order.
        The unary ``+`` in the filters keeps SQLite scanning in key order instead
        of sorting for the ``GROUP BY``.
        """
        clauses = [f"+split IN ({', '.join('?' * len(splits))})"]
        if tasks is not None:
            clauses.append(f"+task IN ({', '.join('?' * len(tasks))})")
        rows = self._conn.execute(
            "SELECT split, model, task, question_id, min(reference), group_concat(sample), "
            f"json_group_array(answer) FROM samples WHERE {' AND '.join(clauses)} "
            "GROUP BY model, task, split, question_id",
            [*splits, *(tasks or ())],
        ).fetchall()
        return {
            split: SampleColumns.from_cells(split, (row[1:] for row in rows if row[0] == split))
            for split in splits
        }

    def completion_tokens(
        self, split: str, tasks: Sequence[str]
    ) -> dict[tuple[str, str], list[int | None]]:
        """Completion tokens of each (model, question id) of ``tasks`` in ``split``, in sample
        order (``None`` where none were reported): what adaptive replay weighs samples by."""
        rows = self._conn.execute(
            "SELECT model, question_id, completion_tokens FROM samples "
            f"WHERE split = ? AND task IN ({', '.join('?' * len(tasks))}) "
            "ORDER BY model, task, split, question_id, sample",
            [split, *tasks],
        )
        tokens: dict[tuple[str, str], list[int | None]] = {}
        for model, question_id, count in rows:
            tokens.setdefault((model, question_id), []).append(count)
        return tokens

    # Calls

    def calls(
        self, method: str, config_hash: str, task: str, split: str
    ) -> dict[_CallKey, RecordedCall]:
        """The recorded calls of one method configuration, by (question_id, step, model)."""
        rows = self._conn.execute(
            f"SELECT {_CALL_COLUMNS} FROM calls "
            "WHERE method = ? AND config_hash = ? AND task = ? AND split = ?",
            (method, config_hash, task, split),
        )
        calls = (_call_from_row(row) for row in rows)
        return {(c.question_id, c.step, c.model): c for c in calls}

    def add_call(self, call: RecordedCall) -> None:
        """Record ``call``, stamped now; a call already recorded under its key stays."""
        values = [getattr(call, name) for name in _CALL_FIELDS]
        values[_CALL_FIELDS.index("messages")] = json.dumps(call.messages)
        values[_CALL_FIELDS.index("replies")] = json.dumps(call.replies)
        values[-1] = call.created_at or utc_now()
        with self._write():
            self._conn.execute(
                f"INSERT INTO calls ({_CALL_COLUMNS}) "
                f"VALUES ({', '.join('?' * len(values))}) ON CONFLICT DO NOTHING",
                values,
            )

    def add_method_wall(self, key: RunKey, seconds: float) -> float:
        """Add ``seconds`` to the wall time of a method run; returns the accumulated total."""
        with self._write():
            self._conn.execute(
                "INSERT INTO method_runs (method, config_hash, task, split, questions_hash, "
                "wall_s, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                "SET wall_s = wall_s + excluded.wall_s, updated_at = excluded.updated_at "
                "WHERE excluded.wall_s > 0",
                (*key, seconds, utc_now()),
            )
            (total,) = self._conn.execute(
                f"SELECT wall_s FROM method_runs WHERE {_RUN_MATCH}", key
            ).fetchone()
        return float(total)

    def save_method_result(self, key: RunKey, result: dict[str, Any]) -> None:
        """Keep ``result`` as the latest result of a method run (unchanged rows stay as
        they are, ``updated_at`` included)."""
        text = json.dumps(result, sort_keys=True)
        with self._write():
            self._conn.execute(
                "INSERT INTO method_runs (method, config_hash, task, split, questions_hash, "
                "result, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                "SET result = excluded.result, updated_at = excluded.updated_at "
                "WHERE result IS NOT excluded.result",
                (*key, text, utc_now()),
            )

    def method_runs(self, *, task: _Filter = None) -> list[MethodRun]:
        """Stored method runs with a result, oldest update first."""
        where, params = _where(task=task)
        rows = self._conn.execute(
            "SELECT method, config_hash, task, split, questions_hash, wall_s, result, "
            f"updated_at FROM method_runs {where} {'AND' if where else 'WHERE'} "
            "result IS NOT NULL ORDER BY updated_at, method",
            params,
        )
        return [
            MethodRun(method, config, name, split, questions, wall, json.loads(result), at)
            for method, config, name, split, questions, wall, result, at in rows
        ]
