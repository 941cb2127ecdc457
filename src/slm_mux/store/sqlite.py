"""SQLite access for the store: every error one :class:`StoreError` line, one writer thread.

Every SQLite error, on any call (running a statement or fetching its rows),
becomes one :class:`~slm_mux.errors.StoreError` naming the file; a damaged
file reads "database disk image is malformed".

:class:`Connected` holds a store's two connections:

- the *reader*, opened by the thread that opened the store and used by every
  call made outside the writer thread (reads, and the ordinary synchronous
  writes of a program that has no event loop). It is opened with
  ``check_same_thread=False`` so a store opened in a worker thread
  (:meth:`Connected.open`) may be used on the event loop's thread; SQLite is
  built serialized (``sqlite3.threadsafety == 3``), and the store is used by
  one thread at a time apart from the writer, which has its own connection.
- the *writer*, opened lazily by :meth:`Connected.write` in the store's one
  writer thread and used only there. ``await store.write(work)`` runs
  ``work`` on that thread, where ``self._conn`` is the writer connection, so
  the ordinary write methods called by ``work`` wait for another process's
  lock there (up to :data:`BUSY_TIMEOUT_S`) while the event loop goes on.
  Writes run one at a time, in the order they were asked for.

The store is in WAL mode, so a read on the reader never waits for a writer
and sees every write committed before it began: after ``await store.write``
returns, reads on the caller's thread see what ``work`` wrote.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from slm_mux.errors import StoreError

BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's transaction to finish."""

T = TypeVar("T")
Filter = str | Sequence[str] | None
"""A query filter of one column: a value, any of several values, or none."""


def _store_error(path: object, error: sqlite3.Error) -> StoreError:
    reason = str(error)
    if "readonly" in reason:
        reason = f"cannot write ({reason})"
    return StoreError(f"{path}: {reason}")


class Cursor(sqlite3.Cursor):
    """A cursor whose SQLite errors, while running or fetching, are :class:`StoreError`."""

    store_path: Path

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as error:
            raise _store_error(self.store_path, error) from None

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
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


class Connection(sqlite3.Connection):
    """The store's connection: every statement runs on a :class:`Cursor`."""

    store_path: Path

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        cursor = self.cursor(Cursor)
        cursor.store_path = self.store_path
        return cursor.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        cursor = self.cursor(Cursor)
        cursor.store_path = self.store_path
        return cursor.executemany(sql, parameters)


def _strip(text: str | None) -> str | None:
    """``str.strip`` for SQL: texts and references compare without surrounding whitespace."""
    return None if text is None else text.strip()


def connect(path: Path, uri: str, *, any_thread: bool = False) -> Connection:
    """A guarded connection to ``uri`` (a ``file:`` URI for ``path``), with ``strip`` in SQL;
    ``any_thread`` lets another thread than the one that opened it use it."""
    try:
        conn = sqlite3.connect(
            uri,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            uri=True,
            factory=Connection,
            check_same_thread=not any_thread,
        )
    except sqlite3.Error as error:
        raise StoreError(f"{path}: cannot open ({error})") from None
    conn.store_path = path
    conn.create_function("strip", 1, _strip, deterministic=True)
    return conn


@contextmanager
def transaction(conn: Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """One transaction on ``conn``: committed when the block ends, else rolled back.

    A failed statement or ``COMMIT`` may have rolled the transaction back already
    (SQLite does on a full disk): the rollback is then skipped, so the error raised
    is the one that happened ("database or disk is full"), not "cannot rollback".
    """
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def writable(path: Path) -> bool:
    """Whether this process may write ``path`` and create files beside it (the WAL files)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def where(**conditions: Filter) -> tuple[str, list[str]]:
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


class Connected:
    """A store file's reader connection and its one writer thread (see the module text).

    Subclasses read and write through ``self._conn`` (the connection of the
    calling thread) and wrap each write in ``with self._write():``.
    """

    path: Path
    readonly: bool

    def __init__(self, path: Path, reader: Connection, *, readonly: bool) -> None:
        """Hold ``reader``, opened on ``path`` with ``any_thread``; the writer opens later."""
        self.path = path
        self.readonly = readonly
        self._reader = reader
        self._writer: ThreadPoolExecutor | None = None
        self._writer_conn: Connection | None = None
        self._writer_thread: int | None = None
        self._writer_lock = threading.Lock()

    @property
    def _conn(self) -> Connection:
        """The writer connection on the writer thread, the reader everywhere else."""
        if self._writer_conn is not None and threading.get_ident() == self._writer_thread:
            return self._writer_conn
        return self._reader

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taking the write lock up front (waits for other writers)."""
        if self.readonly:
            raise StoreError(f"{self.path}: cannot write (the file or its folder is read-only)")
        with transaction(self._conn):
            yield

    async def write(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the store's writer thread and return what it returns.

        ``work`` calls the store's ordinary write methods (``store.add``, ...);
        there they use the writer thread's own connection, so while another
        process holds the write lock only this thread waits, not the event
        loop. Writes run one at a time in the order asked; an error of
        ``work`` is raised here. A caller cancelled while waiting does not
        undo ``work``: it still runs, whole, and commits.
        """
        if self.readonly:
            raise StoreError(f"{self.path}: cannot write (the file or its folder is read-only)")
        with self._writer_lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(
                    max_workers=1,
                    thread_name_prefix="slm-mux-store-writer",
                    initializer=self._open_writer,
                )
            writer = self._writer
        return await asyncio.wrap_future(writer.submit(work))

    def _open_writer(self) -> None:
        """Open the writer connection, in (and for) the writer thread."""
        self._writer_conn = connect(self.path, self.path.absolute().as_uri())
        self._writer_thread = threading.get_ident()

    def _close_writer(self) -> None:
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None

    def close(self) -> None:
        """Finish the writes asked for, then close both connections."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.submit(self._close_writer).result()
            writer.shutdown(wait=True)
        self._reader.close()
