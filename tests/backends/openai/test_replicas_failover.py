"""Acceptance: a collection over three loopback replicas survives one being killed and restarted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from slm_mux.backends import OpenAICompatibleBackend
from slm_mux.collect import collect
from slm_mux.members import Member
from slm_mux.store import Store
from slm_mux.tasks import Question, get_task
from slm_mux.testing import FakeServer, FakeServerConfig, echo_answer, run_fake_server
from slm_mux.testing.fake_server import AnswerFn

QUESTIONS = 300
K = 3


def gated(gate: threading.Event) -> AnswerFn:
    """An answer that waits (in the server's own thread) while ``gate`` is closed."""

    def answer(model: str, prompt: str, seed: int | None, index: int) -> str:
        gate.wait(timeout=20)
        return echo_answer(model, prompt, seed, index)

    return answer


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (it counts server events) until it holds; fail after 2,000 polls."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_a_killed_replica_is_avoided_until_it_returns(tmp_path: Path) -> None:
    gate = threading.Event()
    gate.set()
    config_a = FakeServerConfig(latency_s=0.05)
    config_bc = FakeServerConfig(answers={"*": gated(gate)}, latency_s=0.05)
    killed = run_fake_server(config_a)
    url_a, server_a = killed.__enter__()
    with (
        run_fake_server(config_bc) as (url_b, server_b),
        run_fake_server(config_bc) as (
            url_c,
            server_c,
        ),
    ):
        backend = OpenAICompatibleBackend(
            "replicated",
            base_url=[url_a, url_b, url_c],
            model="m",
            max_concurrency=4,
            timeout_s=30.0,
            max_retries=20,
            backoff_base_s=0.02,
            backoff_max_s=0.2,
        )
        questions = [Question(f"q{i}", f"question {i}", "x") for i in range(QUESTIONS)]
        with Store(tmp_path / "s.db") as store:
            running = asyncio.ensure_future(
                collect(
                    [Member(backend, k=K, max_tokens=64)],
                    get_task("exact"),
                    questions,
                    split="test",
                    store=store,
                )
            )
            survivors = (server_b, server_c)
            try:
                await until(lambda: server_a.responses >= 40, "replica A answered 40")
                await asyncio.to_thread(killed.__exit__, None, None, None)
                answered_by_a = server_a.request_count
                replica_a = backend.replicas.replicas[0]
                # Requests A answered; those still in flight when it died will fail.
                succeeded = replica_a.requests - replica_a.errors - replica_a.in_flight
                before = sum(s.responses for s in survivors)
                await until(
                    lambda: sum(s.responses for s in survivors) >= before + 60,
                    "the survivors answered 60 more",
                )
                probed = replica_a.requests - replica_a.errors - replica_a.in_flight
                # The survivors now hang while A comes back on the same port: the
                # collection can go on only through A.
                gate.clear()
                port = urlsplit(url_a).port
                assert port is not None
                with run_fake_server(config_a, port=port) as (_, server_back):
                    await until(lambda: server_back.responses >= 10, "A answered after return")
                    gate.set()
                    report = await running
                    back = server_back.request_count
            finally:
                gate.set()
                running.cancel()
                await backend.aclose()
            stored = store.stored_keys("replicated", "exact", "test")
            samples = store.count()

    assert report.complete
    assert samples == QUESTIONS * K
    assert stored == {(q.id, i) for q in questions for i in range(K)}
    # No request reached the dead replica: it was at most probed, and every probe failed.
    assert server_a.request_count == answered_by_a
    assert probed == succeeded
    assert back >= 10
    # The survivors shared the load evenly (within 25 % of each other).
    low, high = sorted(s.request_count for s in survivors)
    assert high <= 1.25 * low, (low, high)
    # Every question's samples went in one request, and each request was answered once.
    answered = server_a.responses + back + sum(s.responses for s in survivors)
    assert answered == QUESTIONS
    final = backend.replica_stats()
    assert final[0].cooldowns >= 1
    assert sum(s.requests - s.errors for s in final) == QUESTIONS


def test_servers_restart_on_the_same_port() -> None:
    with run_fake_server() as (url, _):
        port = urlsplit(url).port
    assert port is not None
    with run_fake_server(port=port) as (again, server):
        assert again == url
        assert isinstance(server, FakeServer)
