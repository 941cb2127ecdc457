"""A mux member: one model's backend and the settings it is sampled with."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from slm_mux.backends.base import Backend, GenerationRequest, Price
from slm_mux.tasks.base import Message


@dataclass(frozen=True)
class Member:
    """One model of a mux: its backend and its generation settings.

    ``k`` is the paper's k: how many samples the model contributes to one
    SLM-MUX vote (and, unless told otherwise, how many a collection stores).
    """

    backend: Backend
    k: int = 3
    temperature: float = 0.3
    max_tokens: int = 1024
    seed: int | None = 0
    top_p: float = 1.0
    settings_hash: str | None = None
    price: Price | None = None

    @property
    def name(self) -> str:
        """The model's name in the pool."""
        return self.backend.name

    def request(self, messages: list[Message], n: int, seed: int | None) -> GenerationRequest:
        """A request for ``n`` completions of ``messages`` with this model's settings."""
        return GenerationRequest(
            messages=messages,
            n=n,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=seed,
            top_p=self.top_p,
        )


async def close_members(members: Iterable[Member]) -> None:
    """Release every member's backend (connections, threads, loaded weights) at once."""
    await asyncio.gather(*(member.backend.aclose() for member in members))


async def warm_members(members: Iterable[Member]) -> None:
    """Load every member's model now, before timed work.

    A backend with an async ``warm()`` (an in-process model, loaded on first use
    otherwise) loads there; a backend without one has nothing to load.
    """
    hooks = [getattr(member.backend, "warm", None) for member in members]
    await asyncio.gather(*(hook() for hook in hooks if hook is not None))
