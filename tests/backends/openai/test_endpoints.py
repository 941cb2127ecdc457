"""The endpoint capability cache: consistent evidence only, entries expire, the pool wins;
written off the event loop, safe across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from slm_mux.backends.openai import endpoints
from slm_mux.backends.openai.endpoints import (
    CACHE_TTL_S,
    Endpoint,
    Learned,
    cache_file,
    endpoint,
    read_cache,
    record,
)

WRITER = """
import sys
from slm_mux.backends.openai.endpoints import record
name, count = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    record(f"http://{name}/v1 model-{i}", i % 2 == 0)
    record("http://shared/v1 m", False)
"""


def test_two_processes_writing_at_once_lose_nothing() -> None:
    count = 150
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for name in ("a", "b")
    ]
    for writer in writers:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    for writer in writers:  # both start writing together
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    known = read_cache()
    assert len(known) == 2 * count + 1
    assert known["http://b/v1 model-7"].supports_n is None  # one refusal: not yet known
    assert known["http://b/v1 model-7"].refusals == 1
    assert known["http://a/v1 model-8"].supports_n is True
    assert known["http://shared/v1 m"].refusals == 2 * count  # every refusal counted
    assert sorted(p.name for p in cache_file().parent.iterdir()) == [
        "endpoints.json",
        "endpoints.json.lock",
    ]  # no temporary file left behind


def test_one_refusal_is_not_enough_and_a_full_reply_resets_the_count() -> None:
    key = "http://x/v1 m"
    record(key, False, now=1000.0)
    assert read_cache(now=1000.0)[key] == Learned(None, 1, 1000.0)
    record(key, True, now=1001.0)
    assert read_cache(now=1001.0)[key] == Learned(True, 0, 1001.0)
    record(key, False, now=1002.0)
    record(key, False, now=1003.0)
    assert read_cache(now=1003.0)[key] == Learned(False, 2, 1003.0)


def test_what_is_known_is_not_written_again() -> None:
    record("http://x/v1 m", True)
    before = cache_file().stat().st_mtime_ns
    record("http://x/v1 m", True)
    assert cache_file().stat().st_mtime_ns == before


def test_entries_expire_after_a_day() -> None:
    record("http://x/v1 m", False, now=1000.0)
    record("http://x/v1 m", False, now=1000.0)
    assert read_cache(now=1000.0 + CACHE_TTL_S - 1)["http://x/v1 m"].supports_n is False
    assert read_cache(now=1000.0 + CACHE_TTL_S + 1) == {}
    record("http://y/v1 m", True, now=1000.0 + CACHE_TTL_S + 1)  # drops the expired entry
    assert list(json.loads(cache_file().read_text())) == ["http://y/v1 m"]


def test_entries_from_before_they_had_a_time_are_forgotten() -> None:
    cache_file().parent.mkdir(parents=True)
    cache_file().write_text(json.dumps({"http://x/v1 m": False, "http://y/v1 m": {"at": "x"}}))
    assert read_cache() == {}


def test_a_corrupt_cache_reads_as_empty_and_is_replaced() -> None:
    cache_file().parent.mkdir(parents=True)
    cache_file().write_text("{not json")
    assert read_cache() == {}
    record("http://x/v1 m", True)
    assert read_cache()["http://x/v1 m"].supports_n is True


def test_an_unwritable_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where a folder should be
    record("http://x/v1 m", True)
    assert read_cache() == {}


async def test_observing_writes_the_cache_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    writers: list[threading.Thread] = []

    def recording(key: str, honoured: bool) -> None:
        writers.append(threading.current_thread())
        record(key, honoured)

    monkeypatch.setattr(endpoints, "record", recording)
    state = Endpoint("http://x/v1 m", 4, None, None)
    await state.observe(False)
    assert (state.supports_n, state.refusals) == (None, 1)
    await state.observe(False)
    assert (state.supports_n, state.refusals) == (False, 2)
    assert writers and writers[0] is not threading.main_thread()
    assert read_cache()["http://x/v1 m"].supports_n is False


async def test_the_pools_supports_n_wins_over_the_cache() -> None:
    for _ in range(2):
        record("http://pinned/v1 m", False)
    assert endpoint("a", "http://pinned/v1", "m", 4, None, None).supports_n is False
    pinned = endpoint("a", "http://pinned/v1", "m", 4, None, True)
    assert (pinned.supports_n, pinned.pinned) == (True, True)
    await pinned.observe(False)
    await pinned.observe(False)
    assert pinned.supports_n is True
    assert read_cache()["http://pinned/v1 m"].refusals == 2  # nothing recorded for a pinned one
