"""Another store as the source of an import: staged whole, never written.

A merge (``slm-mux import other.db``) reads every sample, question, failure
and compare record of another store into a :class:`Staging` area, where they
pass the same checks as a file's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from slm_mux.errors import StoreError
from slm_mux.store.calls import RECORD_TABLES
from slm_mux.store.core import Store
from slm_mux.store.records import SAMPLE_ORDER, Grader
from slm_mux.store.schema import upgradable
from slm_mux.store.sqlite import connect
from slm_mux.store.staging import REQUIRED_COLUMNS, Staging

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
def _read_source(path: Path, copy: Path, grader: Grader) -> Iterator[Store]:
    """``path`` opened read-only; a store of an older schema version is copied to ``copy``
    (deleted afterwards) and upgraded there, so the file itself is never written."""
    uri = path.absolute().as_uri() + "?mode=ro"
    try:
        source = Store(path, readonly=True)
    except StoreError:
        try:
            with closing(connect(path, uri)) as conn:
                row = conn.execute("SELECT version FROM schema_version").fetchone()
        except StoreError:
            row = None
        if row is None or not upgradable(row[0]):
            raise
        with closing(connect(path, uri)) as conn, closing(connect(copy, copy.as_uri())) as to:
            conn.backup(to)
        source = Store(copy, grader=grader)
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
    with _read_source(Path(path), staging.path.with_name("upgraded.db"), staging.grader) as source:
        base = staging.source(name, "store")
        before = staging.read
        columns = ", ".join((*REQUIRED_COLUMNS, *_MERGED_OPTIONAL))
        rows = source._conn.execute(f"SELECT {columns} FROM samples {SAMPLE_ORDER}")
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
        for records in RECORD_TABLES:
            found = source._conn.execute(
                f"SELECT {', '.join(records.columns)} FROM {records.table} "
                f"ORDER BY {', '.join(records.key)}"
            ).fetchall()
            staging.add_records(records, [(*row, position + i) for i, row in enumerate(found)])
            position += len(found)
    return staging.read - before
