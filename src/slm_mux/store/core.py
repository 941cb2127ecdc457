"""The :class:`Store`: one SQLite file (WAL mode) holding every sample ever collected.

The tables and their migrations are in :mod:`slm_mux.store.schema`.
Several processes may write to one store at once: every write is one
``BEGIN IMMEDIATE`` transaction and waits for the others (busy timeout). In
a program with an event loop, writes go through ``await store.write(...)``,
which waits on the store's writer thread instead of the loop
(:mod:`slm_mux.store.sqlite`), and the store is opened with ``await
Store.open(...)``, which makes its tables and upgrades it off the loop. A
store whose file or folder cannot be written is opened read-only, without
WAL files, and refuses writes with one line.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from slm_mux.columns import SampleColumns
from slm_mux.errors import StoreError
from slm_mux.sample import Sample
from slm_mux.store.calls import CallRecords
from slm_mux.store.merge import import_staged
from slm_mux.store.records import (
    COLUMNS,
    SAMPLE_COLUMNS,
    SAMPLE_ORDER,
    Failure,
    Grader,
    Holding,
    ImportReport,
    ReplicaRecord,
    default_grader,
    sample_from_row,
    sample_row,
    utc_now,
)
from slm_mux.store.schema import (
    NEEDS_VERDICTS,
    SCHEMA,
    SCHEMA_VERSION,
    grade,
    pending,
    stored_answers,
    upgradable,
)
from slm_mux.store.sqlite import BUSY_TIMEOUT_S, Connection, connect, where, writable
from slm_mux.store.staging import Staging
from slm_mux.store.status import StoreStatus

_INSERT_SAMPLE = (
    f"INSERT INTO samples ({SAMPLE_COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT DO NOTHING"
)


class _Stale(Exception):
    """The stored answers changed between grading them and taking the write lock."""


class Store(CallRecords):
    """A sample store in one SQLite file; use as a context manager or call :meth:`close`.

    With ``create=False`` the file must already be a store. With
    ``readonly=True``, or when this process may not write the file or its
    folder, the store is opened read-only: reading needs no WAL files (an
    ``immutable`` open is the fallback when they cannot be made) and every
    write raises :class:`StoreError`. A file that is not SQLite, is damaged,
    or is not a store of a version this code reads raises :class:`StoreError`
    naming it. ``grader`` gives the verdict of every sample written (default:
    the task's grader).

    The constructor may wait for another process's lock (switching to WAL,
    making tables, upgrading): on an event loop use ``await Store.open(...)``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        readonly: bool = False,
        grader: Grader = default_grader,
    ) -> None:
        path = Path(path)
        self.grader = grader
        exists = path.exists()
        if not exists and (readonly or not create):
            raise StoreError(f"{path}: no such store")
        readonly = readonly or (exists and not writable(path))
        if readonly:
            reader = _open_readonly(path)
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(f"{path}: cannot create ({error.strerror})") from None
            reader = connect(path, path.absolute().as_uri(), any_thread=True)
        super().__init__(path, reader, readonly=readonly)
        try:
            self._prepare(create)
        except BaseException:
            self.close()
            raise

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        readonly: bool = False,
        grader: Grader = default_grader,
    ) -> Store:
        """The store at ``path``, opened on a worker thread so the event loop goes on."""
        return await asyncio.to_thread(cls, path, create=create, readonly=readonly, grader=grader)

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
        """Turn on WAL mode; the switch ignores the busy timeout, so retry until it passes.

        This waits (and sleeps) in the thread that opens the store: a program with
        an event loop opens it with :meth:`open`, on a worker thread.
        """
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
                for statement in SCHEMA:
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
        if upgradable(version):
            raise StoreError(
                f"{self.path}: store schema version {version} needs an upgrade to "
                f"{SCHEMA_VERSION}; open it once where it can be written"
            )
        if version != SCHEMA_VERSION:
            raise self._unsupported(version)

    def _migrate(self) -> None:
        """Run the numbered migrations from the stored version up to :data:`SCHEMA_VERSION`.

        The verdicts a migration needs are graded before its write transaction;
        should the stored answers change before the lock is taken, they are
        graded again.
        """
        while (version := self._version()) != SCHEMA_VERSION:
            needed = NEEDS_VERDICTS.intersection(pending(version))
            answers = stored_answers(self._conn) if needed else set()
            verdicts = grade(answers, self.grader)
            try:
                self._upgrade(answers, verdicts)
            except _Stale:
                continue
            return

    def _upgrade(
        self,
        answers: set[tuple[str, str | None, str]],
        verdicts: dict[tuple[str, str | None, str], bool | None],
    ) -> None:
        """Run the pending migrations in one write transaction, with ``verdicts`` of
        ``answers``; raises :class:`_Stale` (nothing written) if other answers are stored."""
        with self._write():
            version = self._version()  # another process may have upgraded meanwhile
            migrations = pending(version)
            if NEEDS_VERDICTS.intersection(migrations) and stored_answers(self._conn) - answers:
                raise _Stale
            for migration in migrations:
                migration(self._conn, verdicts)
            if version != SCHEMA_VERSION and not migrations:
                raise self._unsupported(version)
            self._conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

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
        rows = [sample_row(sample, now, self.grader) for sample in samples]
        with self._write():
            before = self._conn.total_changes
            self._conn.executemany(_INSERT_SAMPLE, rows)
            return self._conn.total_changes - before

    def import_staged(self, staging: Staging, *, replace: bool = False) -> ImportReport:
        """Write everything ``staging`` holds in one transaction, or nothing
        (:func:`slm_mux.store.merge.import_staged`)."""
        return import_staged(self, staging, replace=replace)

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
        clause, params = where(split=split, model=models, task=task)
        rows = self._conn.execute(
            f"SELECT {SAMPLE_COLUMNS} FROM samples {clause} {SAMPLE_ORDER}", params
        )
        return (sample_from_row(row) for row in rows)

    def models(self, *, split: str | None = None) -> list[str]:
        """Distinct models with samples, sorted."""
        clause, params = where(split=split)
        rows = self._conn.execute(f"SELECT DISTINCT model FROM samples {clause} ORDER BY 1", params)
        return [model for (model,) in rows]

    def splits(self) -> list[str]:
        """Distinct splits with samples, sorted."""
        return [s for (s,) in self._conn.execute("SELECT DISTINCT split FROM samples ORDER BY 1")]

    def tasks(self) -> list[str]:
        """Distinct tasks with samples, sorted."""
        return [t for (t,) in self._conn.execute("SELECT DISTINCT task FROM samples ORDER BY 1")]

    def count(self, *, split: str | None = None) -> int:
        """Number of stored samples."""
        clause, params = where(split=split)
        (count,) = self._conn.execute(f"SELECT COUNT(*) FROM samples {clause}", params).fetchone()
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

    def questions(
        self, *, task: str | None = None, split: str | None = None
    ) -> list[tuple[str, str, str, str, str]]:
        """Stored questions as (task, split, question_id, text, reference), in that order."""
        clause, params = where(task=task, split=split)
        rows = self._conn.execute(
            "SELECT task, split, question_id, text, reference FROM questions "
            f"{clause} ORDER BY task, split, question_id",
            params,
        )
        return [tuple(row) for row in rows]

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
        clause, params = where(model=model, task=task, split=split)
        rows = self._conn.execute(
            "SELECT model, task, question_id, split, error, attempts, last_at FROM failures "
            f"{clause} ORDER BY model, task, split, question_id",
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

    def status(self) -> StoreStatus:
        """What the store holds: per task, split and model, failed questions, servers."""
        return StoreStatus(self.summary(), self.failures(), self.replica_stats())


def _open_readonly(path: Path) -> Connection:
    """A read-only connection; ``immutable`` when the WAL files cannot be opened or made."""
    uri = path.absolute().as_uri() + "?mode=ro"
    conn = connect(path, uri, any_thread=True)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except StoreError:
        conn.close()
        conn = connect(path, uri + "&immutable=1", any_thread=True)
    return conn
