"""Per-replica counters: the collect progress column, the store table, and `slm-mux status`."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from slm_mux.backends import OpenAICompatibleBackend
from slm_mux.backends.openai.replicas import shown_url
from slm_mux.backends.scripted import ScriptedBackend
from slm_mux.cli import main
from slm_mux.collect import replica_line
from slm_mux.members import Member
from slm_mux.store import SCHEMA_VERSION, Store
from slm_mux.testing import FakeServerConfig, Fault, run_fake_server


def _questions(path: Path, count: int) -> Path:
    rows = [
        {"id": f"q{i}", "question": f"What is {i}?", "answer": f"#### {i}"} for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_collect_stores_per_replica_counters_that_status_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ExitStack() as stack:
        (url_a, server_a), (url_b, server_b) = (
            stack.enter_context(run_fake_server()) for _ in range(2)
        )
        server_b.faults.push(Fault.error(429, "busy", retry_after=0.05))
        pool = tmp_path / "pool.yaml"
        pool.write_text(
            "defaults: {k: 2}\nmodels:\n"
            "  - {name: q, backend: openai, model: m, max_retries: 3,\n"
            f"     base_urls: [{url_a}, {{url: {url_b}, max_concurrency: 2}}]}}\n"
        )
        data = _questions(tmp_path / "q.jsonl", 6)
        store = tmp_path / "s.db"
        argv = ["collect", "--pool", str(pool), "--task", "gsm8k", "--data", str(data)]
        assert main([*argv, "--store", str(store), "--quiet"]) == 0
        served = [server_a.request_count, server_b.request_count]
    capsys.readouterr()
    assert main(["status", "--store", str(store), "--json"]) == 0
    replicas = json.loads(capsys.readouterr().out)["replicas"]
    assert [(r["model"], r["url"], r["position"]) for r in replicas] == [
        ("q", url_a, 0),
        ("q", url_b, 1),
    ]
    assert [r["requests"] for r in replicas] == served
    assert [(r["errors"], r["cooldowns"]) for r in replicas] == [(0, 0), (1, 1)]
    assert sum(served) == 7  # six questions, one retry
    assert main(["status", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "Servers per model (its latest collection):" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if "127.0.0.1" in line]
    assert [[cell.strip() for cell in row[:5]] for row in rows] == [
        ["q", url_a, str(served[0]), "0", "0"],
        ["q", url_b, str(served[1]), "1", "1"],
    ]
    # A collection that sends nothing keeps the counters of the last one that did.
    assert main([*argv, "--store", str(store), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", "--store", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["replicas"] == replicas


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT")
def test_an_interrupted_collection_still_stores_its_counters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = FakeServerConfig(latency_s=0.25)  # 200 questions take >= 12 s: time to interrupt
    with ExitStack() as stack:
        (url_a, server_a), (url_b, server_b) = (
            stack.enter_context(run_fake_server(config)) for _ in range(2)
        )
        pool = tmp_path / "pool.yaml"
        pool.write_text(
            "models:\n  - {name: q, backend: openai, model: m, max_concurrency: 2,\n"
            f"     base_urls: [{url_a}, {url_b}]}}\n"
        )
        data = _questions(tmp_path / "q.jsonl", 200)
        store = tmp_path / "s.db"
        argv = [sys.executable, "-m", "slm_mux", "collect", "--pool", str(pool), "--task",
                "gsm8k", "--data", str(data), "--store", str(store), "--quiet"]  # fmt: skip
        victim = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server_a.responses + server_b.responses < 10:
            time.sleep(0.01)
        victim.send_signal(signal.SIGINT)
        _, stderr = victim.communicate(timeout=30)
        answered = [server_a.responses, server_b.responses]
    assert victim.returncode == 130, stderr
    assert main(["status", "--store", str(store), "--json"]) == 0
    replicas = json.loads(capsys.readouterr().out)["replicas"]
    assert [r["url"] for r in replicas] == [url_a, url_b]
    assert sum(answered) < 200, "the interrupt should land mid-run"
    for record, count in zip(replicas, answered, strict=True):
        assert count <= record["requests"] <= count + 2  # + those cut off in flight


def test_the_progress_column_shows_replicas_only_for_a_replicated_model() -> None:
    replicated = OpenAICompatibleBackend(
        "r", base_url=["http://a:1/v1", ("http://b:1/v1", 2)], model="m"
    )
    replicated.replicas.replicas[1].requests = 7
    replicated.replicas.replicas[1].errors = 2
    replicated.replicas.replicas[1].cooldowns = 1
    assert replica_line(Member(replicated)) == "req 0 7 err 0 2 cool 0 1"
    single = OpenAICompatibleBackend("s", base_url="http://c:1/v1", model="m")
    assert replica_line(Member(single)) == ""
    assert replica_line(Member(ScriptedBackend("x", {"*": ["a"]}))) == ""


def test_urls_are_shown_without_credentials() -> None:
    assert shown_url("http://user:secret@host:8000/v1") == "http://host:8000/v1"
    assert shown_url("http://host:8000/v1") == "http://host:8000/v1"


def test_a_version_3_store_gains_the_replica_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE replica_stats")
        conn.execute("UPDATE schema_version SET version = 3")
    conn.close()
    with Store(path) as store:
        assert store.replica_stats() == []
        store.save_replica_stats("q", [("http://a/v1", 3, 1, 1)])
        (record,) = store.replica_stats()
    assert (record.model, record.url, record.requests, record.errors, record.cooldowns) == (
        "q",
        "http://a/v1",
        3,
        1,
        1,
    )
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()
