"""The endpoint capability cache: written off the event loop, safe across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from slm_mux.backends.openai import endpoints
from slm_mux.backends.openai.endpoints import Endpoint, cache_file, read_cache, write_cache

WRITER = """
import sys
from slm_mux.backends.openai.endpoints import write_cache
name, count = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    write_cache(f"http://{name}/v1 model-{i}", i % 2 == 0)
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
    assert len(known) == 2 * count
    assert known["http://b/v1 model-7"] is False and known["http://a/v1 model-8"] is True
    assert sorted(p.name for p in cache_file().parent.iterdir()) == [
        "endpoints.json",
        "endpoints.json.lock",
    ]  # no temporary file left behind


def test_a_write_merges_into_what_is_there_and_skips_what_is_known() -> None:
    write_cache("http://x/v1 m", True)
    write_cache("http://y/v1 m", False)
    before = cache_file().stat().st_mtime_ns
    write_cache("http://x/v1 m", True)
    assert cache_file().stat().st_mtime_ns == before
    assert json.loads(cache_file().read_text()) == {"http://x/v1 m": True, "http://y/v1 m": False}


def test_a_corrupt_cache_reads_as_empty_and_is_replaced() -> None:
    cache_file().parent.mkdir(parents=True)
    cache_file().write_text("{not json")
    assert read_cache() == {}
    write_cache("http://x/v1 m", False)
    assert read_cache() == {"http://x/v1 m": False}


def test_an_unwritable_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where a folder should be
    write_cache("http://x/v1 m", True)
    assert read_cache() == {}


async def test_learning_writes_the_cache_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    writers: list[threading.Thread] = []

    def recording(key: str, supports_n: bool) -> None:
        writers.append(threading.current_thread())
        write_cache(key, supports_n)

    monkeypatch.setattr(endpoints, "write_cache", recording)
    endpoint = Endpoint("http://x/v1 m", 4, None, None)
    await endpoint.learn(False)
    assert endpoint.supports_n is False
    assert writers and writers[0] is not threading.main_thread()
    assert read_cache() == {"http://x/v1 m": False}
