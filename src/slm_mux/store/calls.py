"""Compare records: the model calls and method runs of live comparisons (``slm-mux compare``).

:class:`CallRecords` is the part of :class:`~slm_mux.store.Store` that reads and
writes them; :data:`RECORD_TABLES` describes both tables for a merge, an
export and an import, which carry them like samples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from slm_mux.store.records import (
    CALL_COLUMNS,
    CALL_FIELDS,
    RUN_MATCH,
    CallKey,
    MethodRun,
    RecordedCall,
    RunKey,
    call_from_row,
    known_counts,
    shown,
    utc_now,
)
from slm_mux.store.sqlite import Connected, Filter, where


@dataclass(frozen=True)
class RecordTable:
    """A table of compare records that a merge carries: a record under a stored key must
    agree on ``compared`` (as a sample on its answer) or ``--replace`` overwrites it.

    ``kind`` names its records in JSON Lines (``{"kind": "call", ...}``); the
    ``json`` columns hold JSON text in the table and JSON values in a line.
    """

    table: str
    what: str
    kind: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    compared: tuple[str, ...]
    json: tuple[str, ...]

    def describe(self, key: Sequence[object]) -> str:
        """The record named by its key values."""
        named = ", ".join(
            f"{name} {shown(value)}" for name, value in zip(self.key, key, strict=True)
        )
        return f"{self.what} ({named})"

    def to_record(self, row: Sequence[Any]) -> dict[str, Any]:
        """A stored row as a JSON Lines record (``kind`` first, JSON columns parsed)."""
        record: dict[str, Any] = {"kind": self.kind}
        for column, value in zip(self.columns, row, strict=True):
            record[column] = json.loads(value) if column in self.json and value else value
        known_counts(record)
        return record

    def to_row(self, record: dict[str, Any]) -> tuple[Any, ...]:
        """A JSON Lines record's column values, as the table stores them."""
        return tuple(
            _dumps(column, record[column]) if column in self.json else record[column]
            for column in self.columns
        )


def _dumps(column: str, value: Any) -> str | None:
    """A JSON column's text, written as the store writes it (results with sorted keys)."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=column == "result")


RECORD_TABLES = (
    RecordTable(
        "calls",
        "compare call",
        "call",
        CALL_FIELDS,
        CALL_FIELDS[:7],
        ("n", "messages", "replies"),
        ("messages", "replies"),
    ),
    RecordTable(
        "method_runs",
        "method run",
        "method_run",
        tuple(field.name for field in fields(MethodRun)),
        ("method", "config_hash", "task", "split", "questions_hash"),
        ("result",),
        ("result",),
    ),
)
"""The compare tables a merge, an export and an import carry, checked like samples."""


class CallRecords(Connected):
    """The compare records of a store: calls by method configuration, method runs."""

    def calls(
        self, method: str, config_hash: str, task: str, split: str
    ) -> dict[CallKey, RecordedCall]:
        """The recorded calls of one method configuration, by (question_id, step, model)."""
        rows = self._conn.execute(
            f"SELECT {CALL_COLUMNS} FROM calls "
            "WHERE method = ? AND config_hash = ? AND task = ? AND split = ?",
            (method, config_hash, task, split),
        )
        calls = (call_from_row(row) for row in rows)
        return {(c.question_id, c.step, c.model): c for c in calls}

    def add_call(self, call: RecordedCall) -> None:
        """Record ``call``, stamped now; a call already recorded under its key stays."""
        fields = {name: getattr(call, name) for name in CALL_FIELDS}
        known_counts(fields)
        values = list(fields.values())
        values[CALL_FIELDS.index("messages")] = json.dumps(call.messages)
        values[CALL_FIELDS.index("replies")] = json.dumps(call.replies)
        values[-1] = call.created_at or utc_now()
        with self._write():
            self._conn.execute(
                f"INSERT INTO calls ({CALL_COLUMNS}) "
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
                f"SELECT wall_s FROM method_runs WHERE {RUN_MATCH}", key
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

    def method_runs(self, *, task: Filter = None) -> list[MethodRun]:
        """Stored method runs with a result, oldest update first."""
        clause, params = where(task=task)
        rows = self._conn.execute(
            "SELECT method, config_hash, task, split, questions_hash, wall_s, result, "
            f"updated_at FROM method_runs {clause} {'AND' if clause else 'WHERE'} "
            "result IS NOT NULL ORDER BY updated_at, method",
            params,
        )
        return [
            MethodRun(method, config, name, split, questions, wall, json.loads(result), at)
            for method, config, name, split, questions, wall, result, at in rows
        ]

    def record_rows(
        self, table: RecordTable, *, task: Filter = None, split: Filter = None
    ) -> Iterator[Sequence[Any]]:
        """The rows of one compare table (of ``task`` and ``split``, when given), by key."""
        clause, params = where(task=task, split=split)
        return iter(
            self._conn.execute(
                f"SELECT {', '.join(table.columns)} FROM {table.table} {clause} "
                f"ORDER BY {', '.join(table.key)}",
                params,
            )
        )
