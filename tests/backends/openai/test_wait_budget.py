"""A model known to be down costs a request at most its wait budget (issue 18 §3).

Every wait is on a :class:`~slm_mux.testing.ManualClock`: the tests count sleeps and
requests, never time them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from slm_mux.backends import GenerationRequest, OpenAICompatibleBackend
from slm_mux.backends.openai.replicas import WAIT_BUDGET_S, CoolingDown, Replica, ReplicaSet
from slm_mux.errors import BackendError, InputError
from slm_mux.pool import pool_from_dict
from slm_mux.testing import FakeServer, Fault, ManualClock, run_fake_server

MakeBackend = Callable[..., OpenAICompatibleBackend]


def ask(*, patient: bool = False) -> GenerationRequest:
    return GenerationRequest(
        [{"role": "user", "content": "2+2?"}],
        n=1,
        temperature=0.3,
        max_tokens=16,
        seed=1,
        patient=patient,
    )


def one_cooling(seconds: float, clock: ManualClock) -> ReplicaSet[None]:
    """A set of one replica, cooling for ``seconds`` because it refused a connection."""
    only = Replica("http://a/v1", 4, None)
    replicas = ReplicaSet(
        [only], seed="m", backoff_base_s=0.5, backoff_max_s=30.0, clock=clock, sleep=clock.sleep
    )
    only.requests = 1
    replicas.cool(only, 1, retry_after=seconds, cause="connection refused")
    return replicas


def test_a_request_skips_a_model_cooling_longer_than_its_budget_without_waiting() -> None:
    clock = ManualClock()
    replicas = one_cooling(20.0, clock)
    with pytest.raises(CoolingDown) as raised:
        asyncio.run(replicas.acquire(budget=3.0))
    assert clock.slept == []
    assert (raised.value.wait_s, raised.value.cause) == (20.0, "connection refused")


def test_a_cooldown_within_the_budget_is_waited_for() -> None:
    clock = ManualClock()
    replicas = one_cooling(2.0, clock)
    routed = asyncio.run(replicas.acquire(budget=3.0))
    assert routed is not None and routed[1] == 2.0
    assert clock.slept == [2.0]


def test_without_a_budget_a_request_waits_as_long_as_the_cooldown() -> None:
    clock = ManualClock()
    replicas = one_cooling(20.0, clock)
    routed = asyncio.run(replicas.acquire())
    assert routed is not None and routed[1] == 20.0


def test_a_model_failing_for_longer_than_the_budget_is_known_down_and_skipped_at_once() -> None:
    clock = ManualClock()
    replicas = one_cooling(2.0, clock)  # the outage begins at 0
    (only,) = replicas.replicas
    clock.now = 2.0
    only.requests = 2
    replicas.cool(only, 2, retry_after=2.0, cause="connection refused")  # cools until 4.0
    # A fresh request could wait 2 s, but the outage would then have lasted 4 s > 3 s.
    with pytest.raises(CoolingDown):
        asyncio.run(replicas.acquire(budget=3.0))
    assert clock.slept == []
    only.in_flight = 1
    replicas.release(only, "ok")  # an answer ends the outage
    clock.now = 4.0
    only.requests = 3
    replicas.cool(only, 3, retry_after=2.0)
    routed = asyncio.run(replicas.acquire(budget=3.0))
    assert routed is not None and clock.slept == [2.0]


def closed_port_url() -> str:
    with run_fake_server() as (url, _):
        pass  # stopped: its port now refuses connections
    return url


async def test_a_dead_model_costs_its_first_request_at_most_the_budget_and_later_ones_nothing(
    make_backend: MakeBackend,
) -> None:
    clock = ManualClock()
    backend = make_backend(
        closed_port_url(),
        clock=clock,
        sleep=clock.sleep,
        max_retries=4,
        backoff_base_s=0.5,
        backoff_max_s=30.0,
    )
    with pytest.raises(BackendError):
        await backend.generate(ask())
    first_waits = [seconds for kind, seconds in backend.waits if kind == "retry"]
    assert sum(first_waits) <= WAIT_BUDGET_S
    attempts = backend.replica_stats()[0].requests
    slept = len(clock.slept)
    for _ in range(5):
        with pytest.raises(BackendError, match="skipped: every server is cooling down"):
            await backend.generate(ask())
    # Five requests while the model cools: no request sent, no wait, each counted.
    assert backend.replica_stats()[0].requests == attempts
    assert len(clock.slept) == slept
    assert backend.skipped >= 5


async def test_a_skip_names_the_failure_that_cooled_the_model(make_backend: MakeBackend) -> None:
    clock = ManualClock()
    backend = make_backend(
        closed_port_url(), clock=clock, sleep=clock.sleep, backoff_max_s=30.0, wait_budget_s=0
    )
    with pytest.raises(BackendError, match=r"\(0s in all\) after: connection error"):
        await backend.generate(ask())
    assert backend.replica_stats()[0].requests == 1


async def test_a_patient_request_waits_out_a_cooldown_a_live_one_skips(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    clock = ManualClock()
    backend = make_backend(url, clock=clock, sleep=clock.sleep, backoff_max_s=30.0, max_retries=4)
    server.faults.push(Fault.error(429, "slow down", retry_after=10.0))
    with pytest.raises(BackendError, match="skipped"):
        await backend.generate(ask())
    assert server.request_count == 1
    server.faults.push(Fault.error(429, "slow down", retry_after=10.0))
    clock.now += 10.0  # the first cooldown is over
    completions = await backend.generate(ask(patient=True))
    assert len(completions) == 1
    assert server.request_count == 3
    assert [wait for wait in backend.waits if wait[0] == "retry"] == [("retry", 10.0)]


async def test_no_budget_waits_as_the_cooldowns_last(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    clock = ManualClock()
    backend = make_backend(url, clock=clock, sleep=clock.sleep, backoff_max_s=30.0)
    backend.wait_budget_s = None
    server.faults.push(Fault.error(429, "slow down", retry_after=20.0))
    assert len(await backend.generate(ask())) == 1
    assert list(backend.waits) == [("retry", 20.0)]


def _pool_backend(**entry: object) -> OpenAICompatibleBackend:
    model = {"name": "m", "backend": "openai", "base_url": "http://h:1/v1", "model": "m", **entry}
    (built,) = (model.build() for model in pool_from_dict({"models": [model]}).models)
    assert isinstance(built, OpenAICompatibleBackend)
    return built


def test_the_pool_file_sets_the_wait_budget() -> None:
    assert _pool_backend().wait_budget_s == WAIT_BUDGET_S
    assert _pool_backend(wait_budget_s=0.5).wait_budget_s == 0.5
    assert _pool_backend(wait_budget_s=None).wait_budget_s is None
    with pytest.raises(InputError, match=r"^pool: models\[0\]\.wait_budget_s: Input should be"):
        pool_from_dict(
            {
                "models": [
                    {
                        "name": "m",
                        "backend": "openai",
                        "base_url": "http://h:1/v1",
                        "model": "m",
                        "wait_budget_s": -1,
                    }
                ]
            },
            source="pool",
        )
