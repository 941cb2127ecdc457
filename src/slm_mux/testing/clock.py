"""A manual clock for tests: time moves only when something sleeps on it."""

from __future__ import annotations

import asyncio


class ManualClock:
    """Call it for the time; ``await clock.sleep(s)`` moves it to the sleeper's deadline.

    Pass it as ``clock=clock, sleep=clock.sleep`` wherever a clock and a sleep
    are injected (the replica set, the OpenAI-compatible backend). A sleeper
    yields to the event loop once, so concurrent sleepers each move the time
    to their own deadline and never wait for real. ``slept`` lists every
    sleep asked for, so a test counts waits instead of timing them.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Advance to ``now + seconds`` (unless another sleeper already moved it further)."""
        self.slept.append(seconds)
        deadline = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, deadline)
