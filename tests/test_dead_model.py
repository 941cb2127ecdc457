"""A dead or faulty model costs live answers and comparisons at most the wait budget.

Issue 18 §3 (one model on a closed port slowed every ``serve`` answer by minutes) and
issue 17 §3 (``compare`` with faulty models ran far past its retry budget). Waits go
through a :class:`~slm_mux.testing.ManualClock`: the tests count waits and requests.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from slm_mux.backends import OpenAICompatibleBackend
from slm_mux.backends.openai.replicas import WAIT_BUDGET_S
from slm_mux.collect import collect
from slm_mux.compare import compare
from slm_mux.errors import BackendError
from slm_mux.live import answer
from slm_mux.members import Member, close_members
from slm_mux.methods import compare_methods
from slm_mux.store import Store
from slm_mux.tasks import Question, get_task
from slm_mux.tasks.base import Message
from slm_mux.testing import FakeServer, FakeServerConfig, Fault, ManualClock, run_fake_server

EXACT = get_task("exact")


def _right(model: str, prompt: str, seed: int | None, index: int) -> str:
    found = re.search(r"What is (\d+)", prompt)
    return f"Answer: {2 * int(found.group(1)) if found else 4}"


@pytest.fixture
def good_server() -> Iterator[tuple[str, FakeServer]]:
    with run_fake_server(FakeServerConfig(answers={"*": _right})) as running:
        yield running


def _closed_port() -> str:
    with run_fake_server() as (url, _):
        pass  # stopped: its port now refuses connections
    return url


def _member(name: str, url: str, clock: ManualClock, timeout_s: float = 120.0) -> Member:
    backend = OpenAICompatibleBackend(
        name, base_url=url, model=name, timeout_s=timeout_s, clock=clock, sleep=clock.sleep
    )
    return Member(backend, k=3, max_tokens=32)


def _backend(member: Member) -> OpenAICompatibleBackend:
    assert isinstance(member.backend, OpenAICompatibleBackend)
    return member.backend


def _cooling_waits(members: list[Member]) -> list[float]:
    return [s for m in members for kind, s in _backend(m).waits if kind == "retry"]


async def test_a_dead_model_is_skipped_by_every_answer_after_its_discovery(
    good_server: tuple[str, FakeServer],
) -> None:
    url, server = good_server
    clock = ManualClock()
    members = [
        _member("a", url, clock),
        _member("b", url, clock),
        _member("dead", _closed_port(), clock),
    ]
    dead = _backend(members[2])
    request: list[Message] = [{"role": "user", "content": "What is 2?"}]
    try:
        first = await answer("slm-mux", request, members, task=EXACT)
        assert sum(s for kind, s in dead.waits if kind == "retry") <= WAIT_BUDGET_S
        sent, slept, skipped = dead.replica_stats()[0].requests, len(clock.slept), dead.skipped
        served = server.responses
        answers = [await answer("slm-mux", request, members, task=EXACT) for _ in range(5)]
    finally:
        await close_members(members)
    assert all(found.answer == "4" for found in [first, *answers])
    for found in answers:
        assert set(found.failed) == {"dead"} and "skipped" in found.failed["dead"]
        assert found.samples["dead"].answers == [None] * 3  # k samples without a vote
        assert found.votes["dead"] == {}
    # Five answers: nothing sent to the dead model, no wait, each skip counted.
    assert dead.replica_stats()[0].requests == sent
    assert len(clock.slept) == slept
    assert dead.skipped == skipped + 5
    assert server.responses == served + 10


@contextmanager
def _faulty_server(fault: Fault) -> Iterator[tuple[str, FakeServer]]:
    """A fake server applying ``fault`` to every request."""
    with run_fake_server() as (url, server):
        server.faults.randomly(fault, 1.0)
        yield url, server


async def test_compare_with_failing_models_finishes_within_the_retry_budget(
    good_server: tuple[str, FakeServer], tmp_path: Path
) -> None:
    good_url, good = good_server
    clock = ManualClock()
    questions = [Question(f"q{i}", f"What is {i}?", str(2 * i)) for i in range(3)]
    faults = {
        "err500": Fault.error(500, "always"),
        "malformed": Fault.malformed_json(),
        "hangs": Fault.slow(1000.0),
        "drops": Fault.drop_connection(),
    }
    with ExitStack() as stack:
        servers = {name: stack.enter_context(_faulty_server(f)) for name, f in faults.items()}
        members = [
            _member("good", good_url, clock),
            _member("refused", _closed_port(), clock),
            *(_member(name, url, clock, timeout_s=0.3) for name, (url, _) in servers.items()),
        ]
        with Store(tmp_path / "compare.db") as store:
            try:
                result = await asyncio.wait_for(  # a safety net only: the asserts count
                    compare(
                        members,
                        EXACT,
                        questions,
                        store=store,
                        methods=compare_methods(),
                        settings={},
                        validation_accuracy={"good": 0.9},
                    ),
                    timeout=300,
                )
            finally:
                await close_members(members)
    assert set(compare_methods()) <= set(result.methods)
    for method in ("slm-mux", "debate", "moa", "mav"):
        assert result.methods[method].correct == len(questions), method
    # No request waited for a cooling model beyond its budget...
    assert max(_cooling_waits(members)) <= WAIT_BUDGET_S
    # ...and once known down, a model gets only the probes that end its cooldowns.
    attempts = {m.name: _backend(m).replica_stats()[0].requests for m in members[1:]}
    skipped = {m.name: _backend(m).skipped for m in members[1:]}
    assert all(skipped[name] > attempts[name] for name in attempts), (attempts, skipped)
    assert good.responses > 0


async def test_a_collection_waits_out_a_cooldown_that_a_live_answer_skips(
    good_server: tuple[str, FakeServer], tmp_path: Path
) -> None:
    url, server = good_server
    clock = ManualClock()
    member = _member("m", url, clock)
    question = Question("q1", "What is 1?", "2")
    request: list[Message] = [{"role": "user", "content": question.text}]
    server.faults.push(Fault.error(429, "slow down", retry_after=10.0))
    try:
        with pytest.raises(BackendError, match="skipped"):
            await answer("slm-mux", request, [member], task=EXACT)
        server.faults.push(Fault.error(429, "slow down", retry_after=10.0))
        clock.now += 10.0  # the first cooldown is over
        with Store(tmp_path / "collect.db") as store:
            report = await collect([member], EXACT, [question], split="test", store=store)
            assert report.complete and store.count() == 3
    finally:
        await close_members([member])
    assert _cooling_waits([member]) == [10.0]  # the collection's request waited for it
