"""Writes off the event loop: ``await store.write(work)``, and a collection that goes on
sending and receiving while another process holds the store's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

import pytest

from slm_mux.backends import OpenAICompatibleBackend
from slm_mux.collect import collect
from slm_mux.errors import InputError, StoreError
from slm_mux.members import Member
from slm_mux.sample import Sample, Split
from slm_mux.store import SCHEMA_VERSION, Store
from slm_mux.tasks import Question, get_task
from slm_mux.testing import FakeServerConfig, echo_answer, run_fake_server


def _sample(question: str, number: int = 0, answer: str = "1") -> Sample:
    return Sample("m", "exact", question, "test", number, answer, "1")


async def test_work_runs_on_one_writer_thread_and_its_writes_are_read_back(
    tmp_path: Path,
) -> None:
    threads: list[int] = []

    def add(question: str) -> int:
        threads.append(threading.get_ident())
        return store.add([_sample(question)])

    with await Store.open(tmp_path / "s.db") as store:
        new = await asyncio.gather(*(store.write(partial(add, f"q{i}")) for i in range(20)))
        # Read on this thread, through the reader connection: every write is committed.
        stored = [s.question_id for s in store.samples()]
    assert new == [1] * 20
    assert sorted(stored) == sorted(f"q{i}" for i in range(20))
    assert len(set(threads)) == 1
    assert threads[0] != threading.get_ident()


async def test_writes_run_in_the_order_asked(tmp_path: Path) -> None:
    order: list[int] = []
    with Store(tmp_path / "s.db") as store:
        await asyncio.gather(*(store.write(partial(order.append, i)) for i in range(50)))
    assert order == list(range(50))


async def test_an_error_of_the_work_is_raised_to_the_caller_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "s.db") as store:
        bad = Sample("m", "exact", "q1", cast(Split, "nope"), 0, "1", "1")
        with pytest.raises(InputError, match="split 'nope'"):
            await store.write(lambda: store.add([_sample("q0"), bad]))
        assert store.count() == 0
        assert await store.write(lambda: store.add([_sample("q0")])) == 1


async def test_a_read_only_store_refuses_a_write(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    Store(db).close()
    with Store(db, readonly=True) as store, pytest.raises(StoreError, match="cannot write"):
        await store.write(lambda: store.add([_sample("q0")]))


def test_a_migration_grades_before_it_takes_the_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.add([_sample("q1", answer="41")])
    with sqlite3.connect(db) as conn:  # a version 1 store that kept an imported verdict
        conn.execute("UPDATE samples SET correct = 1")
        conn.execute("UPDATE schema_version SET version = 1")
    conn.close()
    lock_free: list[bool] = []

    def grader(task: str, answer: str | None, reference: str) -> bool | None:
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # fails while any write transaction is open
            other.execute("ROLLBACK")
            lock_free.append(True)
        except sqlite3.OperationalError:
            lock_free.append(False)
        finally:
            other.close()
        return answer == reference

    with Store(db, grader=grader) as store:
        assert [s.correct for s in store.samples()] == [False]
    assert lock_free == [True]
    with Store(db) as store:
        assert store._version() == SCHEMA_VERSION


# --------------------------------------------- acceptance: another process holds the lock

_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
if float(sys.argv[2]):
    time.sleep(float(sys.argv[2]))
else:
    sys.stdin.readline()
conn.execute("ROLLBACK")
print("released", flush=True)
"""
"""Take the store's write lock, say so, and hold it for argv[2] seconds (0: until a line
arrives on stdin)."""

QUESTIONS = 200
K = 3


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (it counts server events) until it holds; fail after 3,000 polls."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def _collect_through_a_lock(tmp_path: Path, hold_s: float) -> tuple[int, int, int]:
    """Collect from a loopback server while another process holds the store's write lock
    (``hold_s`` seconds, or until 30 more answers arrived); returns the answers the server
    gave while the lock was held, the samples stored meanwhile, and the samples stored."""
    config = FakeServerConfig(answers={"*": echo_answer}, honour_n=False, latency_s=0.01)
    with run_fake_server(config) as (url, server):
        backend = OpenAICompatibleBackend("m", base_url=url, model="m", max_concurrency=4)
        questions = [Question(f"q{i}", f"question {i}", "x") for i in range(QUESTIONS)]
        db = tmp_path / "s.db"
        try:
            with await Store.open(db) as store:
                running = asyncio.ensure_future(
                    collect(
                        [Member(backend, k=K, max_tokens=16)],
                        get_task("exact"),
                        questions,
                        split="test",
                        store=store,
                    )
                )
                await _until(lambda: server.answered >= 20, "20 answers before the lock")
                holder = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", _HOLDER, str(db), str(hold_s),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                assert holder.stdin is not None and holder.stdout is not None
                assert await holder.stdout.readline() == b"locked\n"
                at_lock, stored_at_lock = server.answered, store.count()
                if hold_s:
                    assert await holder.stdout.readline() == b"released\n"
                else:
                    await _until(lambda: server.answered >= at_lock + 30, "30 under the lock")
                    stored_under_lock = store.count()
                    holder.stdin.write(b"release\n")
                    await holder.stdin.drain()
                    assert await holder.stdout.readline() == b"released\n"
                answered_under_lock = server.answered - at_lock
                if hold_s:
                    stored_under_lock = store.count()
                assert await holder.wait() == 0
                report = await running
                assert report.complete
                assert store.stored_keys("m", "exact", "test") == {
                    (q.id, i) for q in questions for i in range(K)
                }
                # One sample an answer (the server ignores n): each answer stored once.
                assert server.answered == store.count() == QUESTIONS * K
                assert report.models["m"].collected == QUESTIONS * K
                stored = store.count()
        finally:
            await backend.aclose()
        return answered_under_lock, stored_under_lock - stored_at_lock, stored


async def test_a_collection_goes_on_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    answered, stored_meanwhile, stored = await _collect_through_a_lock(tmp_path, 0)
    assert answered >= 30
    assert stored_meanwhile == 0  # the lock really held every write back
    assert stored == QUESTIONS * K


async def test_a_ten_second_lock_does_not_stop_a_collection(tmp_path: Path) -> None:
    answered, stored_meanwhile, stored = await _collect_through_a_lock(tmp_path, 10)
    assert answered > 0
    assert stored_meanwhile == 0
    assert stored == QUESTIONS * K
