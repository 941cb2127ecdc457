"""The staging area of an import: every sample, question and compare record of the files
(or merged stores) of one import, validated and checked against each other before any of
it reaches a store (:func:`slm_mux.store.merge.import_staged`)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from slm_mux.errors import InputError
from slm_mux.sample import HASHED_SETTINGS, Sample
from slm_mux.store.calls import RECORD_TABLES, RecordTable
from slm_mux.store.records import (
    COLUMNS,
    SAMPLE_COLUMNS,
    Grader,
    default_grader,
    sample_from_row,
    shown,
)
from slm_mux.store.sqlite import connect, transaction

REQUIRED_COLUMNS = ("model", "task", "split", "question_id", "reference", "sample", "answer")
"""The :class:`Sample` columns every staged row gives, in this order."""
_BATCH = 50_000
"""Staged rows bound per ``executemany``."""

_STAGED_FROM = {"model": "l", "task": "l", "question_id": "l", "split": "l", "reference": "r"}
_STAGED_COLUMNS = ", ".join(f"{_STAGED_FROM.get(column, 's')}.{column}" for column in COLUMNS)
_STAGING_SCHEMA = (
    "PRAGMA journal_mode = OFF",
    "PRAGMA synchronous = OFF",
    "PRAGMA cache_size = -131072",  # 128 MiB
    "CREATE TABLE slots (id INTEGER PRIMARY KEY, model, task, split, question_id)",
    "CREATE TABLE refs (id INTEGER PRIMARY KEY, task, split, question_id, reference, origin)",
    f"CREATE TABLE samples (slot INTEGER, sample INTEGER, ref INTEGER, given, "
    f"{', '.join(c for c in COLUMNS if c not in _STAGED_FROM and c != 'sample')}, "
    "origin INTEGER)",
    "CREATE TABLE repeats (slot INTEGER, sample INTEGER, answer, origin INTEGER)",
    "CREATE INDEX repeat_keys ON repeats (slot, sample)",
    "CREATE TABLE questions (task, split, question_id, text, reference, origin)",
    "CREATE TABLE failures (model, task, question_id, split, error, attempts, last_at, "
    "PRIMARY KEY (model, task, split, question_id))",
    *(f"CREATE TABLE {r.table} ({', '.join(r.columns)}, origin INTEGER)" for r in RECORD_TABLES),
    *(f"CREATE INDEX {r.table}_keys ON {r.table} ({', '.join(r.key)})" for r in RECORD_TABLES),
    f"CREATE VIEW staged AS SELECT {_STAGED_COLUMNS}, s.given, s.origin "
    "FROM samples s JOIN slots l ON l.id = s.slot JOIN refs r ON r.id = s.ref",
)
"""The staging file: samples name their (model, task, split, question) slot and their
reference by number; the view ``staged`` gives them back with every :class:`Sample` column.
A sample whose key was staged before goes to ``repeats``, for :meth:`Staging.check`."""

_SEEN_BITS = 1 << 10
"""Sample numbers below this are noted as bits of one integer per slot; others in a set."""

_STAGING_SUFFIX = ".staging"
"""The staging folder of process ``PID``: ``<prefix><PID>-<random>.staging``."""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to another user
        return True
    return True


def remove_stale_stagings(folder: Path, prefix: str) -> list[Path]:
    """Delete the staging folders ``folder/<prefix><PID>-*.staging`` whose process is gone
    (an import killed with ``kill -9`` leaves its staging behind); returns them."""
    if os.name != "posix":  # os.kill(pid, 0) is no probe elsewhere
        return []
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[^/]*" + re.escape(_STAGING_SUFFIX))
    removed = []
    for path in folder.glob(f"{glob.escape(prefix)}*{_STAGING_SUFFIX}"):
        found = pattern.fullmatch(path.name)
        if found and path.is_dir() and not _alive(int(found[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def staging_folder(beside: Path | None) -> Path:
    """A new folder for one import's staging area.

    Beside the store ``beside`` (``<store>.import-<PID>-<random>.staging``, on the
    store's disk) when its folder can be written, else in the temporary folder
    (``slm-mux-import-<PID>-<random>.staging``). Stale folders that dead processes
    left there are removed first.
    """
    if beside is not None and os.access(beside.parent, os.W_OK | os.X_OK):
        parent, prefix = beside.parent, f"{beside.name}.import-"
    else:
        parent, prefix = Path(tempfile.gettempdir()), "slm-mux-import-"
    remove_stale_stagings(parent, prefix)
    made = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", suffix=_STAGING_SUFFIX, dir=parent)
    return Path(made).absolute()


_Group = tuple[int, int, dict[str | None, bool | None]]
"""A staged (model, task, split, question, reference): slot, reference number, and the
verdicts of the answers met so far."""


def other_settings(model: str, task: str, split: str, than: str) -> str:
    """Why samples drawn with other generation settings than ``than`` are refused."""
    return (
        f"model {model!r} has {split} samples ({task}) drawn with other generation settings "
        f"({HASHED_SETTINGS}) than {than}; nothing imported "
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

    Every sample is graded by ``grader`` as it is staged. The staging file lives in
    a folder of its own (:func:`staging_folder`): beside the store ``beside`` it
    imports into, else in the temporary folder; a later import removes the folder
    of one killed before it could.
    """

    def __init__(self, grader: Grader = default_grader, *, beside: Path | None = None) -> None:
        self.grader = grader
        self.folder = staging_folder(beside)
        self.path = self.folder / "staging.db"
        self._conn = connect(self.path, self.path.as_uri())
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
        with transaction(self._conn, "BEGIN"):
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
                    correct = verdicts[answer] = self.grader(values[1], answer, values[4])
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
                    f"{shown(reference)}, but {shown(first)} at {self.where(first_origin)}; "
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
                    f"question {question_id!r} ({task}, {split}) has text {shown(text)}, "
                    f"but {shown(known[0])} at {self.where(known[1])}",
                )
        with transaction(self._conn, "BEGIN"):
            self._conn.executemany("INSERT INTO questions VALUES (?, ?, ?, ?, ?, ?)", new)
            self._stage_names()

    def samples(self) -> list[Sample]:
        """The staged samples in the order first read, graded."""
        rows = self._conn.execute(f"SELECT {SAMPLE_COLUMNS} FROM staged ORDER BY origin, sample")
        return [sample_from_row(row) for row in rows]

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
                f"({task}, {split}) has answer {shown(clash_answer)}, but "
                f"{shown(answer)} at {self.where(origin)}"
            )
        for kind in ("text", "reference"):
            if kind in self._clashes:
                origin, message = self._clashes[kind]
                raise InputError(f"{self.where(origin)}: {message}")
        self._check_settings()
        self._check_records()

    def add_failures(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Stage failures of a merged store (the first staged for a key stays)."""
        with transaction(self._conn, "BEGIN"):
            self._conn.executemany(
                "INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows
            )

    def add_records(self, records: RecordTable, rows: Iterable[Sequence[object]]) -> None:
        """Stage compare records of a merged store: their columns, then their origin."""
        marks = ", ".join("?" * (len(records.columns) + 1))
        with transaction(self._conn, "BEGIN"):
            self._conn.executemany(f"INSERT INTO {records.table} VALUES ({marks})", rows)

    def _check_records(self) -> None:
        """Raise at the first staged compare record that disagrees with an earlier one."""
        for records in RECORD_TABLES:
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
                reason = other_settings(model, task, split, than)
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
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
