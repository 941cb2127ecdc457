"""Replicas: one model served by several servers, and which of them gets each request.

A :class:`ReplicaSet` routes one model's requests over its replicas (a single
server is a set of one):

* **Least busy.** A request goes to the ready replica with the fewest requests
  in flight relative to its ``capacity`` (its concurrency limit); ties are
  broken by a ``random.Random`` seeded with the model's name, so a run routes
  the same way every time. A request counts as in flight from the moment it is
  routed (before any ``await``), so a burst of simultaneous requests spreads
  evenly instead of piling onto the first replica. A request is routed only
  when some replica has a free slot (until then it waits in one queue for the
  whole set), so no replica holds a queue of its own that a failure would strand.
* **Cooldown.** A replica whose attempt failed in a retryable way (429, 5xx, a
  connection error, a timeout, a malformed reply) cools down: for the server's
  ``Retry-After`` seconds when it sent one, else for an exponential backoff
  with jitter in its consecutive failures (:func:`backoff_delay`), both capped
  at ``backoff_max_s``. Failures of requests that were already in flight when
  the replica last failed belong to the same outage and do not lengthen the
  backoff. Cooling replicas get no requests; a replica is ready again when its
  cooldown ends, and its next success resets the backoff.
* **All cooling.** When every replica is cooling, a request waits for the first
  one to recover instead of failing; the caller's retry budget bounds how often.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from slm_mux.backends.base import ReplicaStats

T = TypeVar("T")


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (1-based): half fixed, half jitter, doubling each time."""
    ceiling = min(max_s, base_s * 2.0 ** (attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def shown_url(url: str) -> str:
    """``url`` without the ``user:password@`` part, fit for logs and the store."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass(eq=False)
class Replica(Generic[T]):
    """One server of a model, with what routing needs to know about it.

    ``target`` is whatever the caller sends requests through (for the
    OpenAI-compatible backend, its shared endpoint state).
    """

    url: str
    capacity: int
    target: T
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    cooldowns: int = 0
    strikes: int = 0
    cool_until: float = -math.inf
    last_failure: float = -math.inf

    def stats(self) -> ReplicaStats:
        """A snapshot of the counters, under the URL without any user or password in it."""
        return ReplicaStats(shown_url(self.url), self.requests, self.errors, self.cooldowns)


class ReplicaSet(Generic[T]):
    """Routes requests over ``replicas``: least busy first, cooling replicas skipped.

    ``seed`` (the model's name) seeds the tie-break and the backoff jitter;
    ``clock`` and ``sleep`` are replaceable for tests.
    """

    def __init__(
        self,
        replicas: Sequence[Replica[T]],
        *,
        seed: str,
        backoff_base_s: float,
        backoff_max_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not replicas:
            raise ValueError("a replica set needs at least one replica")
        self.replicas = list(replicas)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._sleep = sleep
        self._tie_break = random.Random(f"replicas:{seed}")
        self._jitter = random.Random(f"retry:{seed}")
        self._waiters: deque[asyncio.Future[None]] = deque()

    def now(self) -> float:
        """The set's clock (``time.monotonic`` unless replaced)."""
        return self._clock()

    def pick(self, usable: Callable[[T], bool] | None = None) -> Replica[T] | None:
        """The least busy ready replica with a free slot (random among equals), or ``None``.

        ``usable`` narrows the choice (say, to replicas that may honour ``n``).
        """
        free = self._free(usable)
        if not free:
            return None
        # Correctly rounded division maps equal ratios to equal floats, so ties are exact.
        least = min(r.in_flight / r.capacity for r in free)
        ties = [r for r in free if r.in_flight / r.capacity == least]
        return ties[0] if len(ties) == 1 else self._tie_break.choice(ties)

    def _free(self, usable: Callable[[T], bool] | None) -> list[Replica[T]]:
        """The usable replicas that are not cooling down and have a free slot."""
        now = self._clock()
        return [
            r
            for r in self.replicas
            if r.cool_until <= now
            and r.in_flight < r.capacity
            and (usable is None or usable(r.target))
        ]

    async def acquire(
        self, usable: Callable[[T], bool] | None = None
    ) -> tuple[Replica[T], float] | None:
        """Route one request: the replica (now counted in flight) and the seconds waited
        because every usable replica was cooling down.

        A request is routed only when a replica has a free slot, so a replica
        that fails meanwhile never holds a queue. ``None`` when no replica is
        usable at all. Release the replica with :meth:`release`.
        """
        waited = 0.0
        while True:
            replica = self.pick(usable)
            if replica is not None:
                replica.in_flight += 1
                replica.requests += 1
                return replica, waited
            candidates = [r for r in self.replicas if usable is None or usable(r.target)]
            if not candidates:
                return None
            now = self._clock()
            cooling = [r.cool_until - now for r in candidates if r.cool_until > now]
            recovery = min(cooling) if cooling else None
            if recovery is not None and len(cooling) == len(candidates):
                waited += recovery
                await self._sleep(recovery)
            else:  # every ready replica is full: wait for a slot (or a recovery)
                await self._slot_freed(recovery)
                if self._free(None) and not self._free(usable):
                    self._wake_one()  # the slot suits another waiter, not this one

    async def _slot_freed(self, timeout: float | None) -> None:
        """Wait until :meth:`release` wakes this request, at most ``timeout`` seconds."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait([waiter], timeout=timeout)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken, then called off: hand the slot on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
                self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        """Wake the longest-waiting request, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def release(self, replica: Replica[T], outcome: Literal["ok", "error", "cancelled"]) -> None:
        """The request routed to ``replica`` is over: answered, failed, or called off."""
        replica.in_flight -= 1
        self._wake_one()
        if outcome == "ok":
            replica.strikes = 0
        elif outcome == "error":
            replica.errors += 1

    def cool(self, replica: Replica[T], sent_at: float, retry_after: float | None) -> float:
        """Cool ``replica`` down after a retryable failure of a request sent at ``sent_at``.

        Returns the cooldown's length in seconds (``Retry-After`` or backoff, capped).
        """
        now = self._clock()
        if sent_at >= replica.last_failure:  # a new failure, not one more of the same outage
            replica.strikes += 1
            replica.cooldowns += 1
        replica.last_failure = now
        delay = retry_after
        if delay is None:
            delay = backoff_delay(
                replica.strikes, self.backoff_base_s, self.backoff_max_s, self._jitter
            )
        delay = min(delay, self.backoff_max_s)
        replica.cool_until = max(replica.cool_until, now + delay)
        return delay

    def stats(self) -> list[ReplicaStats]:
        """Every replica's counters, in the order the replicas were given."""
        return [replica.stats() for replica in self.replicas]
