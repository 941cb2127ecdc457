"""Routing over replicas, with a fake clock: least busy, seeded ties, cooldown and recovery."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from slm_mux.backends.openai.replicas import Replica, ReplicaSet
from slm_mux.testing import ManualClock


def replica_set(
    *capacities: int, clock: ManualClock | None = None, seed: str = "m"
) -> ReplicaSet[None]:
    clock = clock or ManualClock(100.0)
    replicas = [Replica(f"http://r{i}/v1", c, None) for i, c in enumerate(capacities)]
    return ReplicaSet(
        replicas,
        seed=seed,
        backoff_base_s=1.0,
        backoff_max_s=8.0,
        clock=clock,
        sleep=clock.sleep,
    )


def route(replicas: ReplicaSet[None], count: int) -> list[str]:
    """Route ``count`` requests that all stay in flight; the URLs they went to."""

    async def run() -> list[str]:
        chosen = []
        for _ in range(count):
            routed = await replicas.acquire()
            assert routed is not None
            chosen.append(routed[0].url)
        return chosen

    return asyncio.run(run())


def test_a_burst_spreads_evenly_instead_of_piling_on_the_first() -> None:
    chosen = route(replica_set(10, 10, 10), 30)
    assert Counter(chosen) == {"http://r0/v1": 10, "http://r1/v1": 10, "http://r2/v1": 10}
    # Each round of three visits every replica once, in a seeded random order.
    for start in range(0, 30, 3):
        assert sorted(chosen[start : start + 3]) == ["http://r0/v1", "http://r1/v1", "http://r2/v1"]
    assert chosen != ["http://r0/v1", "http://r1/v1", "http://r2/v1"] * 10


def test_ties_are_broken_the_same_way_for_the_same_model_name() -> None:
    assert route(replica_set(4, 4, 4), 12) == route(replica_set(4, 4, 4), 12)
    orders = {tuple(route(replica_set(4, 4, 4, seed=f"m{i}"), 12)) for i in range(5)}
    assert len(orders) > 1


def test_load_is_relative_to_each_replicas_concurrency() -> None:
    chosen = Counter(route(replica_set(6, 2), 8))
    assert chosen == {"http://r0/v1": 6, "http://r1/v1": 2}


def test_finished_requests_free_their_replica() -> None:
    replicas = replica_set(4, 4)

    async def run() -> list[str]:
        first = await replicas.acquire()
        second = await replicas.acquire()
        assert first is not None and second is not None
        replicas.release(first[0], "ok")
        third = await replicas.acquire()
        assert third is not None
        return [first[0].url, second[0].url, third[0].url]

    first, second, third = asyncio.run(run())
    assert first != second
    assert third == first


def test_a_failed_replica_cools_down_then_comes_back() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(4, 4, clock=clock)
    bad, good = replicas.replicas
    assert replicas.cool(bad, clock.now, retry_after=None) == pytest.approx(0.75, abs=0.25)
    replicas.release(bad, "error")
    assert [replicas.pick() for _ in range(5)] == [good] * 5
    good.in_flight = good.capacity
    assert replicas.pick() is None
    clock.now = bad.cool_until
    assert replicas.pick() is bad
    assert [s.cooldowns for s in replicas.stats()] == [1, 0]
    assert [s.errors for s in replicas.stats()] == [1, 0]


def test_retry_after_sets_the_cooldown_capped_at_the_backoff_maximum() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(4, clock=clock)
    (only,) = replicas.replicas
    assert replicas.cool(only, clock.now, retry_after=3.0) == 3.0
    assert only.cool_until == clock.now + 3.0
    assert replicas.cool(only, clock.now, retry_after=60.0) == 8.0


def test_backoff_grows_with_consecutive_failures_and_resets_on_success() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(4, clock=clock)
    (only,) = replicas.replicas
    delays = []
    for _ in range(5):
        sent = clock.now
        clock.now += 0.01
        delays.append(replicas.cool(only, sent, retry_after=None))
    # Base 1 s doubling, half of it jitter, capped at 8 s.
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert only.cooldowns == 5
    routed = asyncio.run(replicas.acquire())
    assert routed is not None
    replicas.release(only, "ok")
    clock.now += 0.01
    assert replicas.cool(only, clock.now, retry_after=None) <= 1.0


def test_failures_of_requests_already_in_flight_are_one_outage() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(8, clock=clock)
    (only,) = replicas.replicas
    sent = clock.now
    clock.now += 0.5
    for _ in range(6):  # six requests sent together, all failing: one cooldown, no escalation
        assert replicas.cool(only, sent, retry_after=None) <= 1.0
    assert (only.cooldowns, only.strikes) == (1, 1)


def test_when_every_replica_cools_a_request_waits_for_the_first_to_recover() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(4, 4, 4, clock=clock)
    first, second, third = replicas.replicas
    for replica, seconds in ((first, 5.0), (second, 2.0), (third, 7.0)):
        replicas.cool(replica, clock.now, retry_after=seconds)
    routed = asyncio.run(replicas.acquire())
    assert routed == (second, 2.0)
    assert clock.slept == [2.0]


def test_a_filter_that_nothing_passes_gives_none() -> None:
    replicas = replica_set(4, 4)
    assert asyncio.run(replicas.acquire(lambda _: False)) is None


def test_cancelled_requests_are_not_errors() -> None:
    replicas = replica_set(4)
    routed = asyncio.run(replicas.acquire())
    assert routed is not None
    replicas.release(routed[0], "cancelled")
    assert (routed[0].in_flight, routed[0].errors, routed[0].requests) == (0, 0, 1)


def test_a_full_set_queues_requests_until_a_slot_frees() -> None:
    replicas = replica_set(1, 1)

    async def run() -> list[str]:
        first = await replicas.acquire()
        second = await replicas.acquire()
        assert first is not None and second is not None
        third = asyncio.ensure_future(replicas.acquire())
        await asyncio.sleep(0)
        assert not third.done()
        replicas.cool(second[0], replicas.now(), retry_after=5.0)
        replicas.release(second[0], "error")  # a cooling replica's freed slot is no use
        await asyncio.sleep(0)
        assert not third.done()
        replicas.release(first[0], "ok")
        routed = await third
        assert routed is not None
        return [first[0].url, routed[0].url]

    first, third = asyncio.run(run())
    assert third == first


def test_a_woken_request_that_is_called_off_hands_its_slot_on() -> None:
    replicas = replica_set(1)

    async def run() -> bool:
        (only, _) = await replicas.acquire() or (None, 0.0)
        assert only is not None
        first = asyncio.ensure_future(replicas.acquire())
        second = asyncio.ensure_future(replicas.acquire())
        await asyncio.sleep(0)
        replicas.release(only, "ok")  # wakes the first waiter...
        first.cancel()  # ...which is called off before it runs
        routed = await asyncio.wait_for(second, timeout=5)
        return routed is not None and routed[0] is only

    assert asyncio.run(run())
