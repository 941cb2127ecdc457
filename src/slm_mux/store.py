"""The sample store: one SQLite file (WAL mode) holding every sample ever collected.

Tables:

- ``samples``: one row per sample, keyed by (model, task, split, question_id,
  sample); ``correct`` is always the task grader's verdict, computed when the
  row is written (an imported verdict never overrides it);
- ``questions``: question text and reference per (task, split, question_id),
  for reports; an id is never stored for two different questions;
- ``failures``: questions whose collection failed, with the last error;
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
in one transaction, or nothing.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from slm_mux.columns import SampleColumns
from slm_mux.errors import InputError, StoreError
from slm_mux.sample import SPLITS, Sample
from slm_mux.tasks import graded

SCHEMA_VERSION = 2
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
_KEY = ("model", "task", "split", "question_id", "sample")
REQUIRED_COLUMNS = ("model", "task", "question_id", "split", "sample", "answer", "reference")
"""The :class:`Sample` columns every staged row gives, in this order."""
_BATCH = 50_000
"""Staged rows bound per ``executemany``."""
_QUESTION = ("task", "split", "question_id")

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
    """

    read: int
    new: int
    replaced: int
    regraded: int
    first_regraded: str | None


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


_MIGRATIONS: dict[int, Callable[[_Connection], None]] = {1: _regrade}
"""Migration ``n`` turns a version ``n`` store into version ``n + 1``."""


class Staging:
    """The samples and questions of one import, validated and checked against each other.

    Rows live in a private temporary SQLite file, not in memory, and reach a
    store only through :meth:`Store.import_staged`. Each row remembers where it
    came from (``origin``: the file's number and a line or response index), so
    every conflict names ``file:line``. A key staged twice with the same answer
    is kept once; with another answer :meth:`check` refuses it.
    """

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="slm-mux-import-")
        self.path = Path(self._folder.name) / "staging.db"
        self._conn = _connect(self.path, self.path.as_uri())
        self._conn.execute("PRAGMA journal_mode = OFF")
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.execute("PRAGMA cache_size = -131072")  # 128 MiB
        columns = ", ".join(_COLUMNS)
        self._conn.execute(
            f"CREATE TABLE samples ({columns}, given, origin, clash_origin, clash_answer, "
            f"PRIMARY KEY ({', '.join(_KEY)})) WITHOUT ROWID"
        )
        self._conn.execute(
            "CREATE TABLE questions (task, split, question_id, text, reference, origin, "
            "clash_origin, clash_text, PRIMARY KEY (task, split, question_id)) WITHOUT ROWID"
        )
        self._sources: list[tuple[str, str]] = []
        self.read = 0

    def source(self, name: str, unit: str = "line") -> int:
        """Register a file; returns the base of its origins (add a line or response index).

        ``unit`` is ``"line"`` (shown ``file:N``) or ``"response"`` (``file: responses[N]``).
        """
        self._sources.append((name, unit))
        return (len(self._sources) - 1) << 32

    def where(self, origin: int) -> str:
        """The ``file:line`` (or ``file: responses[i]``) of an origin."""
        name, unit = self._sources[origin >> 32]
        position = origin & 0xFFFFFFFF
        return f"{name}:{position}" if unit == "line" else f"{name}: responses[{position}]"

    def add_samples(self, rows: Iterable[tuple[tuple[str, ...], tuple[object, ...]]]) -> None:
        """Stage samples in one transaction, graded.

        A row is (the optional :class:`Sample` columns it gives, its values): the
        values of :data:`REQUIRED_COLUMNS`, then of those optional columns (an
        imported ``correct`` among them), then the origin. Only given values are
        bound, which is most of the time an import takes.
        """
        batches: dict[tuple[str, ...], list[tuple[object, ...]]] = {}
        self._conn.execute("BEGIN")
        try:
            for optional, values in rows:
                batch = batches.setdefault(optional, [])
                batch.append((*values, verdict(values[1], values[5], values[6])))  # type: ignore[arg-type]
                if len(batch) >= _BATCH:
                    self._insert(optional, batch)
            for optional, batch in batches.items():
                self._insert(optional, batch)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _insert(self, optional: tuple[str, ...], batch: list[tuple[object, ...]]) -> None:
        """Stage and empty one batch of rows that give the same ``optional`` columns."""
        names = [*REQUIRED_COLUMNS, *("given" if n == "correct" else n for n in optional)]
        names += ["origin", "correct"]
        self._conn.executemany(
            f"INSERT INTO samples ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            "ON CONFLICT DO UPDATE SET clash_origin = excluded.origin, "
            "clash_answer = excluded.answer "
            "WHERE samples.clash_origin IS NULL AND samples.answer IS NOT excluded.answer",
            batch,
        )
        self.read += len(batch)
        batch.clear()

    def add_questions(
        self, task: str, split: str, rows: Iterable[tuple[str, str, str, int]]
    ) -> None:
        """Stage (question_id, text, reference, origin) of questions with a text."""
        self._conn.execute("BEGIN")
        self._conn.executemany(
            "INSERT INTO questions VALUES (?, ?, ?, ?, ?, ?, NULL, NULL) "
            "ON CONFLICT DO UPDATE SET clash_origin = excluded.origin, clash_text = excluded.text "
            "WHERE questions.clash_origin IS NULL "
            "AND strip(questions.text) != strip(excluded.text)",
            ((task, split, qid, text, reference, origin) for qid, text, reference, origin in rows),
        )
        self._conn.execute("COMMIT")

    def samples(self) -> list[Sample]:
        """The staged samples in the order first read, graded."""
        rows = self._conn.execute(f"SELECT {_SAMPLE_COLUMNS} FROM samples ORDER BY origin")
        return [_sample_from_row(row) for row in rows]

    def check(self) -> None:
        """Raise :class:`InputError` at the first record that contradicts an earlier one:
        a sample with another answer, or a question id with another reference or text."""
        row = self._conn.execute(
            "SELECT model, task, split, question_id, sample, answer, origin, clash_answer, "
            "clash_origin FROM samples WHERE clash_origin IS NOT NULL "
            "ORDER BY clash_origin LIMIT 1"
        ).fetchone()
        if row is not None:
            model, task, split, qid, number, answer, origin, clash_answer, clash = row
            raise InputError(
                f"{self.where(clash)}: sample {number} of {model!r} on question {qid!r} "
                f"({task}, {split}) has answer {_shown(clash_answer)}, but "
                f"{_shown(answer)} at {self.where(origin)}"
            )
        row = self._conn.execute(
            "SELECT task, split, question_id, text, origin, clash_text, clash_origin "
            "FROM questions WHERE clash_origin IS NOT NULL ORDER BY clash_origin LIMIT 1"
        ).fetchone()
        if row is not None:
            task, split, qid, text, origin, clash_text, clash = row
            raise InputError(
                f"{self.where(clash)}: question {qid!r} ({task}, {split}) has text "
                f"{_shown(clash_text)}, but {_shown(text)} at {self.where(origin)}"
            )
        self._conn.execute("DROP TABLE IF EXISTS refs")
        self._conn.execute(
            "CREATE TABLE refs AS SELECT task, split, question_id, reference, "
            "MIN(origin) AS origin FROM (SELECT task, split, question_id, reference, origin "
            "FROM samples UNION ALL SELECT task, split, question_id, reference, origin "
            "FROM questions) GROUP BY task, split, question_id, reference"
        )
        self._conn.execute("CREATE INDEX refs_question ON refs (task, split, question_id)")
        row = self._conn.execute(
            "SELECT a.task, a.split, a.question_id, a.reference, a.origin, b.reference, b.origin "
            "FROM refs a JOIN refs b USING (task, split, question_id) "
            "WHERE a.origin < b.origin AND strip(a.reference) != strip(b.reference) "
            "ORDER BY b.origin LIMIT 1"
        ).fetchone()
        if row is not None:
            task, split, qid, first, origin, other, clash = row
            raise InputError(
                f"{self.where(clash)}: question {qid!r} ({task}, {split}) has reference "
                f"{_shown(other)}, but {_shown(first)} at {self.where(origin)}; "
                "a question id names one question"
            )

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
                conflicts = self._answer_conflicts(staging, first_only=not replace)
                if conflicts and not replace:
                    raise StoreError(conflicts[0])
                return self._insert_staged(staging, replace, len(conflicts))
        finally:
            self._conn.execute("DETACH DATABASE staging")

    def _check_staged(self, staging: Staging) -> None:
        """Raise at the first staged reference or question text the store contradicts."""
        row = self._conn.execute(
            "SELECT r.task, r.split, r.question_id, r.reference, r.origin, s.reference "
            "FROM main.samples s CROSS JOIN staging.refs r "
            "ON r.task = s.task AND r.split = s.split AND r.question_id = s.question_id "
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

    def _answer_conflicts(self, staging: Staging, *, first_only: bool) -> list[str]:
        """One line per staged sample whose stored sample has another answer (in file order)."""
        rows = self._conn.execute(
            "SELECT n.model, n.task, n.split, n.question_id, n.sample, n.answer, s.answer, "
            "n.origin FROM staging.samples n JOIN main.samples s "
            f"USING ({', '.join(_KEY)}) WHERE n.answer IS NOT s.answer ORDER BY n.origin"
            + (" LIMIT 1" if first_only else "")
        )
        return [
            f"{staging.where(origin)}: sample {number} of {model!r} on question {qid!r} "
            f"({task}, {split}) is stored with answer {_shown(stored)}, this file says "
            f"{_shown(answer)}; nothing imported (--replace overwrites)"
            for model, task, split, qid, number, answer, stored, origin in rows
        ]

    def _insert_staged(self, staging: Staging, replace: bool, replaced: int) -> ImportReport:
        before = self._conn.total_changes
        update = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in _KEY)
        on_conflict = (
            f"UPDATE SET {update} WHERE samples.answer IS NOT excluded.answer"
            if replace
            else "NOTHING"
        )
        stamped = _SAMPLE_COLUMNS.replace("created_at", "coalesce(created_at, ?)")
        self._conn.execute(
            f"INSERT INTO main.samples ({_SAMPLE_COLUMNS}) "
            f"SELECT {stamped} FROM staging.samples WHERE true ON CONFLICT DO {on_conflict}",
            (utc_now(),),
        )
        changed = self._conn.total_changes - before
        self._conn.execute(
            "INSERT INTO main.questions SELECT task, split, question_id, text, reference "
            "FROM staging.questions WHERE true ON CONFLICT DO NOTHING"
        )
        regraded, first = self._conn.execute(
            "SELECT COUNT(*), MIN(origin) FROM staging.samples "
            "WHERE given IS NOT NULL AND given IS NOT correct"
        ).fetchone()
        return ImportReport(
            read=staging.read,
            new=changed - replaced,
            replaced=replaced,
            regraded=int(regraded),
            first_regraded=None if first is None else staging.where(first),
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

    # Arrays

    def sample_columns(
        self, split: str, tasks: Sequence[str], *, models: Sequence[str] | None = None
    ) -> SampleColumns:
        """The samples of ``split`` and ``tasks`` (and ``models``) as columns, for analysis.

        One query groups the samples by (model, task, question, answer), so rows
        are distinct answers, not samples; sample numbers come back as one
        comma-joined list per row and are parsed by numpy.
        """
        where, params = _where(split=split, task=list(tasks), model=models)
        rows = self._conn.execute(
            "SELECT model, task, question_id, answer, min(reference), count(*), "
            f"group_concat(sample) FROM samples {where} GROUP BY model, task, question_id, answer",
            params,
        ).fetchall()
        model_ids: dict[str, int] = {}
        question_ids: dict[tuple[str, str], int] = {}
        references: list[str] = []
        pair_ids: dict[tuple[int, str | None], int] = {}
        pair_question: list[int] = []
        row_model, row_pair, counts, numbers = [], [], [], []
        for model, task, question_id, answer, reference, count, sample_list in rows:
            q = question_ids.setdefault((task, question_id), len(question_ids))
            if q == len(references):
                references.append(reference)
            p = pair_ids.setdefault((q, answer), len(pair_ids))
            if p == len(pair_question):
                pair_question.append(q)
            row_model.append(model_ids.setdefault(model, len(model_ids)))
            row_pair.append(p)
            counts.append(count)
            numbers.append(sample_list)
        repeats = np.array(counts, dtype=np.int64)
        samples = (
            np.fromstring(",".join(numbers), dtype=np.int64, sep=",")
            if numbers
            else np.zeros(0, dtype=np.int64)
        )
        return SampleColumns(
            split=split,
            models=list(model_ids),
            question_ids=[question_id for _, question_id in question_ids],
            tasks=[task for task, _ in question_ids],
            references=references,
            answers=[answer for _, answer in pair_ids],
            pair_question=np.array(pair_question, dtype=np.int64),
            model=np.repeat(np.array(row_model, dtype=np.int64), repeats),
            pair=np.repeat(np.array(row_pair, dtype=np.int64), repeats),
            sample=samples,
        )
