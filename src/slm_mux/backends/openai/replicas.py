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
* **Cooldown, only on evidence.** One failed request says little about its
  server, so it is retried on its own (the caller backs off: :meth:`ReplicaSet.retry_delay`)
  and the replica stays in service. A replica cools down (gets no requests) only on
  evidence that it is down or overloaded (:meth:`ReplicaSet.failed`):

  - ``"down"``: the connection was refused or reset;
  - ``"overloaded"``: a 429, or a 503 with ``Retry-After``;
  - an error *rate*: other failures (5xx, timeouts, malformed replies) when at
    least :data:`RATE_MIN_FAILURES` of the replica's last :data:`RATE_WINDOW`
    attempts within :data:`RATE_WINDOW_S` seconds failed, and they are at least
    :data:`RATE_MIN_SHARE` of those attempts plus the other requests still in
    flight there (errors come back faster than answers: a burst of quick failures
    must not outvote the answers still on their way). So 15 % random 500s do not
    cool a server; one failing every request does, after 5 to ``capacity / 2``
    failures. Cooling clears the window: the next cooldown needs fresh evidence.

  A cooldown lasts the server's ``Retry-After`` seconds when it sent one, else an
  exponential backoff with jitter in the replica's consecutive cooldowns
  (:func:`backoff_delay`), both capped at ``backoff_max_s``. Failures of requests
  routed to the replica before its latest cooldown began belong to that cooldown
  (the same outage, or the same ``Retry-After`` period): they neither lengthen it nor
  start another, so a burst of 429s costs one wait. A replica is ready again when its
  cooldown ends, and its next success resets the backoff.
* **All cooling: wait a little, else skip.** When every replica is cooling, a request
  waits for the first one to recover, but only within its *wait budget*
  (:data:`WAIT_BUDGET_S` unless the pool says otherwise), and only while the model is
  not *known down*. The request fails at once with :class:`CoolingDown`, sending
  nothing, when that recovery is further away than what is left of the budget (the
  seconds it waited for recoveries in all its attempts count against it), or comes more
  than the budget after that replica's outage began (its first cooldown since its last
  success). So an outage's first few seconds are waited out (a restart, a ``Retry-After``
  of a second or two), and after that a model that is down costs a request nothing
  while it cools: one request probes it each time a cooldown ends. ``None``: no budget,
  wait as long as the cooldowns last (bounded by the caller's retry count).
* **No lost wake-ups.** Each routing decision reads the clock once, and every wait
  has a deadline: the first recovery, else :attr:`ReplicaSet.backoff_max_s` (then it
  looks again), measured with the injected ``sleep``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from slm_mux.backends.base import ReplicaStats

T = TypeVar("T")

Evidence = Literal["down", "overloaded", "error"]
"""What a retryable failure says about its replica: refused or reset connection,
429 (or 503 with ``Retry-After``), or anything else (it counts toward the error rate)."""

RATE_WINDOW = 20
"""The error rate looks at a replica's last this many attempts..."""
RATE_WINDOW_S = 10.0
"""...of the last this many seconds,"""
RATE_MIN_FAILURES = 5
"""...and cools the replica when at least this many of them failed..."""
RATE_MIN_SHARE = 0.5
"""...and the failures are at least this share of them."""

WAIT_BUDGET_S = 3.0
"""Seconds one request may wait, over all its attempts, for a cooling model to recover
(the pool key ``wait_budget_s``'s default)."""


class CoolingDown(Exception):
    """Every usable replica is cooling down for longer than the request may still wait.

    ``wait_s``: seconds until the first of them recovers; ``cause``: the failure that
    began that replica's cooldown (``""`` when unknown).
    """

    def __init__(self, wait_s: float, cause: str) -> None:
        super().__init__(f"cooling down for {wait_s:.1f}s more")
        self.wait_s = wait_s
        self.cause = cause


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
    OpenAI-compatible backend, its shared endpoint state). ``requests`` also
    numbers the requests routed here: a request's number is ``requests`` right
    after it was routed (see :meth:`ReplicaSet.failed`).
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
    cooled_after: int = 0
    """How many requests had been routed here when the latest cooldown began."""
    cause: str = ""
    """The failure that began the latest cooldown, for the requests it turns away."""
    outage_began: float = -math.inf
    """When the first cooldown since the latest success began."""
    recent: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))
    """The latest attempts' ends for the error rate: ``(time, failed)``, oldest first."""

    def stats(self) -> ReplicaStats:
        """A snapshot of the counters, under the URL without any user or password in it."""
        return ReplicaStats(shown_url(self.url), self.requests, self.errors, self.cooldowns)

    def failing(self, now: float, pending: int) -> bool:
        """Whether the recent attempts, with ``pending`` others in flight, meet the
        error-rate rule (the module's docstring)."""
        while self.recent and self.recent[0][0] < now - RATE_WINDOW_S:
            self.recent.popleft()
        failures = sum(failed for _, failed in self.recent)
        attempts = len(self.recent) + pending
        return failures >= RATE_MIN_FAILURES and failures >= RATE_MIN_SHARE * attempts


class ReplicaSet(Generic[T]):
    """Routes requests over ``replicas``: least busy first, cooling replicas skipped.

    ``seed`` (the model's name) seeds the tie-break and the backoff jitter.
    Cooldowns back off from ``backoff_base_s``, a request's own retries from the
    shorter ``retry_base_s`` (a random error on a healthy server is best retried
    soon); both stop at ``backoff_max_s``. ``clock`` and ``sleep`` are replaceable
    for tests.
    """

    def __init__(
        self,
        replicas: Sequence[Replica[T]],
        *,
        seed: str,
        backoff_base_s: float,
        backoff_max_s: float,
        retry_base_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not replicas:
            raise ValueError("a replica set needs at least one replica")
        self.replicas = list(replicas)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_base_s = retry_base_s
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
        return self._least_busy(self._free(usable, self._clock()))

    def _least_busy(self, free: list[Replica[T]]) -> Replica[T] | None:
        """The replica of ``free`` with the fewest requests per slot (random among equals)."""
        if not free:
            return None
        # Correctly rounded division maps equal ratios to equal floats, so ties are exact.
        least = min(r.in_flight / r.capacity for r in free)
        ties = [r for r in free if r.in_flight / r.capacity == least]
        return ties[0] if len(ties) == 1 else self._tie_break.choice(ties)

    def _free(self, usable: Callable[[T], bool] | None, now: float) -> list[Replica[T]]:
        """The usable replicas that are not cooling down at ``now`` and have a free slot."""
        return [
            r
            for r in self.replicas
            if r.cool_until <= now
            and r.in_flight < r.capacity
            and (usable is None or usable(r.target))
        ]

    async def acquire(
        self,
        usable: Callable[[T], bool] | None = None,
        budget: float | None = None,
        spent: float = 0.0,
    ) -> tuple[Replica[T], float] | None:
        """Route one request: the replica (now counted in flight) and the seconds waited
        because every usable replica was cooling down.

        A request is routed only when a replica has a free slot, so a replica
        that fails meanwhile never holds a queue. ``None`` when no replica is
        usable at all. A request that already waited ``spent`` seconds for recoveries
        waits at most ``budget - spent`` more (``None``: no limit); it raises
        :class:`CoolingDown` at once when the first recovery is further away, or the
        model is known down (the module's docstring). Release the replica with
        :meth:`release`.
        """
        waited = 0.0
        while True:
            now = self._clock()  # the one reading this decision rests on
            candidates = [r for r in self.replicas if usable is None or usable(r.target)]
            if not candidates:
                return None
            replica = self._least_busy(self._free(usable, now))
            if replica is not None:
                replica.in_flight += 1
                replica.requests += 1
                return replica, waited
            cooling = [r.cool_until - now for r in candidates if r.cool_until > now]
            if len(cooling) == len(candidates):
                first = min(candidates, key=lambda r: r.cool_until)
                wait = first.cool_until - now
                if budget is not None and (
                    spent + waited + wait > budget or first.cool_until - first.outage_began > budget
                ):
                    raise CoolingDown(wait, first.cause)
                waited += wait
                await self._sleep(wait)
                continue
            # Every ready replica is full: wait for a slot, a recovery, or the deadline.
            await self._slot_freed(min(cooling, default=self.backoff_max_s))
            now = self._clock()
            if self._free(None, now) and not self._free(usable, now):
                self._wake_one()  # the slot suits another waiter, not this one

    async def _slot_freed(self, timeout: float) -> None:
        """Wait until :meth:`release` wakes this request, at most ``timeout`` seconds
        (slept with the set's ``sleep``)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        deadline = asyncio.ensure_future(self._sleep(timeout))
        try:
            await asyncio.wait([waiter, deadline], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken, then called off: hand the slot on
            raise
        finally:
            deadline.cancel()
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
            replica.recent.append((self._clock(), False))
        elif outcome == "error":
            replica.errors += 1

    def failed(
        self,
        replica: Replica[T],
        number: int,
        evidence: Evidence,
        retry_after: float | None,
        cause: str = "",
    ) -> bool:
        """Request ``number`` (see :class:`Replica`) failed at ``replica`` in a retryable way
        (``cause`` says how): cool the replica when the failure is evidence enough (the
        module's docstring).

        Returns whether the replica is cooling now; if not, the request backs off on
        its own before its retry (:meth:`retry_delay`).
        """
        now = self._clock()
        if evidence == "error":
            replica.recent.append((now, True))
            if replica.failing(now, pending=max(replica.in_flight - 1, 0)):  # not this one
                self._cool(replica, number, None, now, cause)
        else:
            self._cool(replica, number, retry_after, now, cause)
        return replica.cool_until > now

    def cool(
        self, replica: Replica[T], number: int, retry_after: float | None, cause: str = ""
    ) -> float:
        """Cool ``replica`` down because request ``number`` found it down or overloaded.

        Returns the new cooldown's length in seconds (``Retry-After`` or backoff, capped),
        or 0 when the request was routed before the latest cooldown began (it belongs to it).
        """
        return self._cool(replica, number, retry_after, self._clock(), cause)

    def _cool(
        self, replica: Replica[T], number: int, retry_after: float | None, now: float, cause: str
    ) -> float:
        if number <= replica.cooled_after:  # sent before the latest cooldown began
            return 0.0
        if replica.strikes == 0:
            replica.outage_began = now
        replica.strikes += 1
        replica.cooldowns += 1
        replica.cooled_after = replica.requests
        replica.cause = cause
        replica.recent.clear()
        delay = retry_after
        if delay is None:
            delay = backoff_delay(
                replica.strikes, self.backoff_base_s, self.backoff_max_s, self._jitter
            )
        delay = min(delay, self.backoff_max_s)
        replica.cool_until = max(replica.cool_until, now + delay)
        return delay

    def retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """How long a request waits on its own before retry ``attempt`` (1-based) when its
        replica stays in service: the ``Retry-After`` it got, else a seeded, jittered
        exponential backoff from ``retry_base_s``; both capped at ``backoff_max_s``."""
        if retry_after is None:
            return backoff_delay(attempt, self.retry_base_s, self.backoff_max_s, self._jitter)
        return min(retry_after, self.backoff_max_s)

    def stats(self) -> list[ReplicaStats]:
        """Every replica's counters, in the order the replicas were given."""
        return [replica.stats() for replica in self.replicas]
