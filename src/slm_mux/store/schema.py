"""The store's tables, and the numbered migrations that bring an older store up to date.

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
- ``schema_version``: one integer, :data:`SCHEMA_VERSION`.

:data:`MIGRATIONS` is a list of functions: ``MIGRATIONS[n - 1]`` turns a
version ``n`` store into version ``n + 1``. A migration that needs the
grader's verdicts gets them passed in (:class:`Verdicts`, graded before the
write transaction begins), so no grading happens while the write lock is held.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from slm_mux.store.records import Grader
from slm_mux.store.sqlite import Connection

SCHEMA_VERSION = 4
"""Version of the table layout this code reads and writes."""
CALL_TABLES = (
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

REPLICA_TABLE = """CREATE TABLE IF NOT EXISTS replica_stats (
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

SCHEMA = (
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
    *CALL_TABLES,
    REPLICA_TABLE,
)


Answer = tuple[str, str | None, str]
"""What a verdict depends on: (task, answer, reference)."""
Verdicts = Mapping[Answer, bool | None]
"""The grader's verdict of every distinct (task, answer, reference) a store holds."""
Migration = Callable[[Connection, Verdicts], None]


def stored_answers(conn: Connection) -> set[Answer]:
    """Every distinct (task, answer, reference) of the stored samples."""
    rows = conn.execute("SELECT DISTINCT task, answer, reference FROM samples")
    return {(task, answer, reference) for task, answer, reference in rows}


def grade(answers: set[Answer], grader: Grader) -> dict[Answer, bool | None]:
    """The verdict of each of ``answers``."""
    return {answer: grader(*answer) for answer in answers}


def _regrade(conn: Connection, verdicts: Verdicts) -> None:
    """1 -> 2: store the grader's verdict wherever an imported one contradicts it."""
    conn.execute(
        "CREATE TEMP TABLE verdicts (task TEXT, answer TEXT, reference TEXT, correct INTEGER)"
    )
    try:
        conn.executemany(
            "INSERT INTO temp.verdicts VALUES (?, ?, ?, ?)",
            [(*answer, correct) for answer, correct in verdicts.items()],
        )
        conn.execute(
            "UPDATE samples SET correct = v.correct FROM temp.verdicts v "
            "WHERE v.task = samples.task AND v.answer IS samples.answer "
            "AND v.reference = samples.reference AND samples.correct IS NOT v.correct"
        )
    finally:
        conn.execute("DROP TABLE temp.verdicts")


def _add_call_tables(conn: Connection, verdicts: Verdicts) -> None:
    """2 -> 3: the tables of live comparisons."""
    for statement in CALL_TABLES:
        conn.execute(statement)


def _add_replica_table(conn: Connection, verdicts: Verdicts) -> None:
    """3 -> 4: per-replica counters of collections."""
    conn.execute(REPLICA_TABLE)


MIGRATIONS: list[Migration] = [_regrade, _add_call_tables, _add_replica_table]
"""``MIGRATIONS[n - 1]`` turns a version ``n`` store into version ``n + 1``."""
NEEDS_VERDICTS = frozenset({_regrade})
"""The migrations that read the verdicts they are given."""


def upgradable(version: int) -> bool:
    """Whether the migrations bring a store of ``version`` up to :data:`SCHEMA_VERSION`."""
    return 1 <= version <= len(MIGRATIONS)


def pending(version: int) -> list[Migration]:
    """The migrations that bring ``version`` to :data:`SCHEMA_VERSION`, in order."""
    return MIGRATIONS[version - 1 :] if upgradable(version) else []
