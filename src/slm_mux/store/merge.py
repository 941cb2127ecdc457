"""Writing a checked :class:`~slm_mux.store.staging.Staging` area into a store, all or nothing.

:meth:`Store.import_staged <slm_mux.store.Store.import_staged>` runs
:func:`import_staged`: the staging file is attached to the store's connection
and, in one write transaction, checked against what the store holds
(references, question texts, answers, generation settings, compare records)
and then written.
"""

from __future__ import annotations

from dataclasses import replace as replace_fields
from typing import TYPE_CHECKING

from slm_mux.errors import StoreError
from slm_mux.store.calls import RECORD_TABLES, RecordTable
from slm_mux.store.records import COLUMNS, KEY, SAMPLE_COLUMNS, ImportReport, shown, utc_now
from slm_mux.store.staging import Staging, other_settings

if TYPE_CHECKING:
    from slm_mux.store.core import Store


def import_staged(store: Store, staging: Staging, *, replace: bool = False) -> ImportReport:
    """Write everything ``staging`` holds into ``store`` in one transaction, or nothing.

    A staged question id whose reference (or text) differs from the stored
    one, or a staged sample whose answer differs from the stored sample
    under its key, raises :class:`StoreError` naming the file and line and
    both values; with ``replace`` such samples are overwritten instead. A
    sample stored with the same answer is left as it is.
    """
    staging.check()
    conn = store._conn
    conn.execute("ATTACH DATABASE ? AS staging", (str(staging.path),))
    try:
        with store._write():
            _check_staged(store, staging)
            stored, differing = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(n.answer IS NOT s.answer), 0) "
                f"FROM staging.staged n JOIN main.samples s USING ({', '.join(KEY)}) "
                "WHERE EXISTS (SELECT * FROM main.samples)"  # skips the join into a new store
            ).fetchone()
            if differing and not replace:
                raise StoreError(_answer_conflict(store, staging))
            _check_staged_settings(store, staging)
            records = {r.what: _merge_records(store, staging, r, replace) for r in RECORD_TABLES}
            failures = _merge_failures(store)
            report = _insert_staged(store, staging, replace, stored, differing)
            return replace_fields(report, failures=failures, records=records)
    finally:
        conn.execute("DETACH DATABASE staging")


def _check_staged_settings(store: Store, staging: Staging) -> None:
    """Raise when a model's staged samples of one task and split were drawn with other
    generation settings than its stored ones (collect would refuse the store)."""
    for model, task, split, settings, origin in staging.settings():
        if store.settings_hashes(model, task, split) - {settings}:
            where = f"{staging.where(origin)}: "
            raise StoreError(where + other_settings(model, task, split, f"{store.path} holds"))


def _merge_records(store: Store, staging: Staging, records: RecordTable, replace: bool) -> int:
    """Store the staged compare records of one table; returns how many were added or
    replaced. A record stored under its key with other ``compared`` values raises
    :class:`StoreError` unless ``replace``; one that agrees stays as stored."""
    columns, key = ", ".join(records.columns), ", ".join(records.key)
    differ = " OR ".join(f"n.{c} IS NOT s.{c}" for c in records.compared)
    row = store._conn.execute(
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
    before = store._conn.total_changes
    store._conn.execute(
        f"INSERT INTO main.{records.table} ({columns}) SELECT {columns} "
        f"FROM staging.{records.table} ORDER BY origin ON CONFLICT DO {on_conflict}"
    )
    return store._conn.total_changes - before


def _merge_failures(store: Store) -> int:
    """Store the staged failures; returns how many were new. A failure is left out when
    the store already records it, or holds samples of its question (collected here)."""
    before = store._conn.total_changes
    store._conn.execute(
        "INSERT INTO main.failures SELECT * FROM staging.failures f WHERE NOT EXISTS "
        "(SELECT * FROM main.samples s WHERE s.model = f.model AND s.task = f.task "
        "AND s.split = f.split AND s.question_id = f.question_id) ON CONFLICT DO NOTHING"
    )
    return store._conn.total_changes - before


def _check_staged(store: Store, staging: Staging) -> None:
    """Raise at the first staged reference or question text the store contradicts.

    Stored samples are looked up by key prefix, model by model (the models
    found by a loose index scan), so the check reads the stored samples of
    the staged questions only.
    """
    row = store._conn.execute(
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
            f"{shown(reference)}, but {store.path} holds it with reference "
            f"{shown(stored)}; a question id names one question"
        )
    row = store._conn.execute(
        "SELECT n.task, n.split, n.question_id, n.text, n.origin, q.text "
        "FROM staging.questions n JOIN main.questions q USING (task, split, question_id) "
        "WHERE strip(n.text) != strip(q.text) ORDER BY n.origin LIMIT 1"
    ).fetchone()
    if row is not None:
        task, split, qid, text, origin, stored = row
        raise StoreError(
            f"{staging.where(origin)}: question {qid!r} ({task}, {split}) has text "
            f"{shown(text)}, but {store.path} holds it with text {shown(stored)}; "
            "use another --store"
        )


def _answer_conflict(store: Store, staging: Staging) -> str:
    """The line naming the first staged sample (in file order) stored with another answer."""
    model, task, split, qid, number, answer, stored, origin = store._conn.execute(
        "SELECT n.model, n.task, n.split, n.question_id, n.sample, n.answer, s.answer, "
        "n.origin FROM staging.staged n JOIN main.samples s "
        f"USING ({', '.join(KEY)}) WHERE n.answer IS NOT s.answer "
        "ORDER BY n.origin, n.sample LIMIT 1"
    ).fetchone()
    return (
        f"{staging.where(origin)}: sample {number} of {model!r} on question {qid!r} "
        f"({task}, {split}) is stored with answer {shown(stored)}, this file says "
        f"{shown(answer)}; nothing imported (--replace overwrites)"
    )


def _insert_staged(
    store: Store, staging: Staging, replace: bool, stored: int, differing: int
) -> ImportReport:
    """Write the staged samples (``stored`` of them are already stored under their key,
    ``differing`` of those with another answer) and questions."""
    before = store._conn.total_changes
    if stored < staging.count() or (replace and differing):
        update = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in KEY)
        on_conflict = (
            f"UPDATE SET {update} WHERE samples.answer IS NOT excluded.answer"
            if replace
            else "NOTHING"
        )
        stamped = SAMPLE_COLUMNS.replace("created_at", "coalesce(created_at, ?)")
        store._conn.execute(
            f"INSERT INTO main.samples ({SAMPLE_COLUMNS}) "
            f"SELECT {stamped} FROM staging.staged WHERE true ON CONFLICT DO {on_conflict}",
            (utc_now(),),
        )
    changed = store._conn.total_changes - before
    store._conn.execute(
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
