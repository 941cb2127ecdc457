"""Routing over replicas, with a fake clock: least busy, seeded ties, cooldown and recovery."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from slm_mux.backends.openai.replicas import RATE_WINDOW_S, Replica, ReplicaSet
from slm_mux.testing import ManualClock


def replica_set(
    *capacities: int,
    clock: ManualClock | None = None,
    seed: str = "m",
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> ReplicaSet[None]:
    clock = clock or ManualClock(100.0)
    replicas = [Replica(f"http://r{i}/v1", c, None) for i, c in enumerate(capacities)]
    return ReplicaSet(
        replicas,
        seed=seed,
        backoff_base_s=1.0,
        backoff_max_s=8.0,
        retry_base_s=1.0,
        clock=clock,
        sleep=sleep or clock.sleep,
    )


async def stopped_time(seconds: float) -> None:
    """A sleep that never ends: time stands still, so only a release wakes a waiter."""
    await asyncio.Event().wait()


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


def routed_one(replicas: ReplicaSet[None], replica: Replica[None]) -> int:
    """Count one more request as routed to ``replica`` (and over); its number there."""
    replica.requests += 1
    return replica.requests


def test_a_failed_replica_cools_down_then_comes_back() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(4, 4, clock=clock)
    bad, good = replicas.replicas
    number = routed_one(replicas, bad)
    assert replicas.cool(bad, number, retry_after=None) == pytest.approx(0.75, abs=0.25)
    replicas.release(bad, "error")
    bad.in_flight = 0
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
    assert replicas.cool(only, routed_one(replicas, only), retry_after=3.0) == 3.0
    assert only.cool_until == clock.now + 3.0
    assert replicas.cool(only, routed_one(replicas, only), retry_after=60.0) == 8.0


def test_backoff_grows_with_consecutive_failures_and_resets_on_success() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(4, clock=clock)
    (only,) = replicas.replicas
    delays = [replicas.cool(only, routed_one(replicas, only), retry_after=None) for _ in range(5)]
    # Base 1 s doubling, half of it jitter, capped at 8 s.
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert only.cooldowns == 5
    routed = asyncio.run(replicas.acquire())
    assert routed is not None
    replicas.release(only, "ok")
    assert replicas.cool(only, routed_one(replicas, only), retry_after=None) <= 1.0


def test_failures_of_requests_already_in_flight_are_one_outage() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(8, clock=clock)
    (only,) = replicas.replicas
    numbers = [routed_one(replicas, only) for _ in range(6)]  # sent together, all failing
    assert replicas.cool(only, numbers[2], retry_after=None) <= 1.0
    for number in numbers:  # one cooldown, no escalation, no extension
        assert replicas.cool(only, number, retry_after=None) == 0.0
    assert (only.cooldowns, only.strikes) == (1, 1)
    # A request routed after the cooldown began is new evidence.
    assert replicas.cool(only, routed_one(replicas, only), retry_after=None) > 0
    assert (only.cooldowns, only.strikes) == (2, 2)


def test_a_burst_of_429s_costs_one_retry_after_period() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(16, clock=clock)
    (only,) = replicas.replicas
    numbers = [routed_one(replicas, only) for _ in range(16)]
    for number in numbers[5::3]:  # several 429s, arriving apart, from requests sent together
        assert replicas.failed(only, number, "overloaded", retry_after=1.0)
        clock.now += 0.1
    assert (only.cooldowns, only.cool_until) == (1, 101.0)


def test_one_random_error_leaves_the_only_replica_in_service() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(16, clock=clock)
    (only,) = replicas.replicas
    for _ in range(17):  # 15 % random errors: 3 of every 20 attempts
        for failed in (True, False, False, False, False, False, True):
            number = routed_one(replicas, only)
            if failed:
                assert not replicas.failed(only, number, "error", retry_after=None)
            else:
                replicas.release(only, "ok")
        clock.now += 0.1
    assert only.cooldowns == 0
    assert replicas.pick() is only


def test_an_error_rate_over_the_window_cools_the_replica() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(16, clock=clock)
    (only,) = replicas.replicas
    outcomes = [False, True, True, False, True, True]  # 4 failures of 6: not yet 5
    for failed in outcomes:
        number = routed_one(replicas, only)
        if failed:
            assert not replicas.failed(only, number, "error", retry_after=None)
        else:
            replicas.release(only, "ok")
    assert replicas.failed(only, routed_one(replicas, only), "error", retry_after=None)
    assert only.cooldowns == 1 and not only.recent  # the next cooldown needs fresh evidence


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(16, clock=clock)
    (only,) = replicas.replicas
    for _ in range(4):
        replicas.failed(only, routed_one(replicas, only), "error", retry_after=None)
    clock.now += RATE_WINDOW_S + 1
    assert not replicas.failed(only, routed_one(replicas, only), "error", retry_after=None)
    assert only.cooldowns == 0


def test_a_refused_connection_cools_at_once() -> None:
    replicas = replica_set(4)
    (only,) = replicas.replicas
    assert replicas.failed(only, routed_one(replicas, only), "down", retry_after=None)
    assert only.cooldowns == 1


def test_a_retry_backs_off_with_seeded_jitter_or_its_retry_after() -> None:
    first, second = replica_set(4), replica_set(4)
    delays = [first.retry_delay(attempt, None) for attempt in (1, 2, 3)]
    assert delays == [second.retry_delay(attempt, None) for attempt in (1, 2, 3)]
    for delay, ceiling in zip(delays, [1, 2, 4], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert first.retry_delay(1, 2.5) == 2.5
    assert first.retry_delay(1, 60.0) == 8.0


def test_when_every_replica_cools_a_request_waits_for_the_first_to_recover() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(4, 4, 4, clock=clock)
    first, second, third = replicas.replicas
    for replica, seconds in ((first, 5.0), (second, 2.0), (third, 7.0)):
        replicas.cool(replica, routed_one(replicas, replica), retry_after=seconds)
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
    replicas = replica_set(1, 1, sleep=stopped_time)

    async def run() -> list[str]:
        first = await replicas.acquire()
        second = await replicas.acquire()
        assert first is not None and second is not None
        third = asyncio.ensure_future(replicas.acquire())
        await asyncio.sleep(0)
        assert not third.done()
        replicas.cool(second[0], second[0].requests, retry_after=5.0)
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
    replicas = replica_set(1, sleep=stopped_time)

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


class SteppingClock:
    """A clock whose readings are scripted: each read returns the next (the last repeats)."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)


def test_a_cooldown_ending_between_two_clock_reads_wakes_the_request() -> None:
    # The cooldown ends at 10.0: the first reading sees it cooling, later ones see it over.
    clock = SteppingClock(9.75, 10.25)
    replicas = ReplicaSet(
        [Replica("http://r0/v1", 1, None, cool_until=10.0)],
        seed="m",
        backoff_base_s=1.0,
        backoff_max_s=8.0,
        clock=clock,
        sleep=clock.sleep,
    )

    async def run() -> tuple[Replica[None], float] | None:
        return await asyncio.wait_for(replicas.acquire(), timeout=5)  # a hang guard only

    routed = asyncio.run(run())
    assert routed == (replicas.replicas[0], 0.25)
    assert clock.slept == [0.25]


def test_waiting_for_a_slot_ends_when_a_cooling_replica_recovers() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(1, 1, clock=clock)
    busy, cooling = replicas.replicas
    busy.in_flight = 1  # never released
    cooling.cool_until = 105.0

    async def run() -> tuple[Replica[None], float] | None:
        return await asyncio.wait_for(replicas.acquire(), timeout=5)  # a hang guard only

    routed = asyncio.run(run())
    assert routed is not None and routed[0] is cooling
    assert clock.slept == [5.0]


def test_every_wait_for_a_slot_has_a_deadline() -> None:
    clock = ManualClock(100.0)
    replicas = replica_set(1, clock=clock)
    (only,) = replicas.replicas
    only.in_flight = 1

    async def run() -> None:
        waiting = asyncio.ensure_future(replicas.acquire())
        for _ in range(20):
            await asyncio.sleep(0)
        only.in_flight = 0  # freed without a release (no wake-up): the deadline finds it
        routed = await asyncio.wait_for(waiting, timeout=5)  # a hang guard only
        assert routed is not None and routed[0] is only

    asyncio.run(run())
    assert clock.slept and set(clock.slept) == {8.0}


def test_quick_failures_do_not_outvote_answers_still_in_flight() -> None:
    replicas = replica_set(16)
    (only,) = replicas.replicas
    only.in_flight = 16  # a burst: errors come back at once, answers take a while
    for _ in range(6):
        assert not replicas.failed(only, routed_one(replicas, only), "error", retry_after=None)
        only.in_flight -= 1
    assert only.cooldowns == 0
