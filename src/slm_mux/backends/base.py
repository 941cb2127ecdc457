"""What every model backend provides: n completions for a chat request.

A backend is anything with a ``name``, an async :meth:`Backend.stream` that
hands back the ``request.n`` completions in batches as they finish (so a
caller can store each at once), an async :meth:`Backend.generate` that
collects them (:func:`gather_stream`), and an async :meth:`Backend.aclose`.

Token accounting: when one request yields several choices, the prompt is
processed (and billed) once, so its token count is split across the choices
and the per-completion numbers add up to what the server reported (see
:func:`split_tokens`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Completion:
    """One sampled response: its text, token counts, latency and why it stopped."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    finish_reason: str | None


@dataclass(frozen=True)
class GenerationRequest:
    """A chat request for ``n`` samples.

    ``seed`` makes sampling reproducible where the backend supports it;
    ``top_p`` (nucleus sampling, 1: off) is sent to servers when below 1 and
    honoured row by row by the in-process backend. A ``patient`` request (a
    collection's, which wants every sample) may wait longer for a model that is
    cooling down than a live answer's (see :mod:`slm_mux.backends.openai.client`).
    """

    messages: list[dict[str, str]]
    n: int
    temperature: float
    max_tokens: int
    seed: int | None = None
    top_p: float = 1.0
    patient: bool = False


Batch = list[tuple[int, Completion]]
"""Completions that finished together, each with its sample index (``0 .. n-1``)."""


class Backend(Protocol):
    """A model that answers chat requests."""

    name: str
    """The model's name in the pool."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[Batch]:
        """Every index ``0 .. n-1`` exactly once, in batches as they finish; or ``BackendError``."""
        ...

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        """Exactly ``request.n`` completions, or raise ``BackendError``."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads or memory held by the backend."""
        ...


@dataclass(frozen=True)
class ReplicaStats:
    """One replica's counters: requests sent, failed attempts, cooldowns begun."""

    url: str
    requests: int
    errors: int
    cooldowns: int


@runtime_checkable
class Replicated(Protocol):
    """A backend whose requests go to replicas and that counts them per replica."""

    def replica_stats(self) -> list[ReplicaStats]:
        """Requests, failed attempts and cooldowns per replica so far."""
        ...


async def gather_stream(batches: AsyncIterator[Batch], n: int) -> list[Completion]:
    """The ``n`` completions of a :meth:`Backend.stream`, in sample order."""
    found: dict[int, Completion] = {}
    async for batch in batches:
        found.update(batch)
    return [found[i] for i in range(n)]


@dataclass(frozen=True)
class Price:
    """US dollars per million prompt (input) and completion (output) tokens."""

    input_per_million: float
    output_per_million: float

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The cost of the given token counts."""
        return (
            prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        ) / 1_000_000


@dataclass
class Usage:
    """Running totals of one backend's token use (unknown counts are skipped)."""

    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, completions: Iterable[Completion]) -> None:
        """Count the tokens of ``completions``."""
        for completion in completions:
            self.completions += 1
            self.prompt_tokens += completion.prompt_tokens or 0
            self.completion_tokens += completion.completion_tokens or 0

    def cost_usd(self, price: Price | None) -> float | None:
        """The total cost at ``price``, or ``None`` without a price."""
        if price is None:
            return None
        return price.cost_usd(self.prompt_tokens, self.completion_tokens)


def split_tokens(total: int | None, weights: Sequence[int]) -> list[int | None]:
    """Split ``total`` tokens into integer shares proportional to ``weights``.

    Shares add up to ``total`` exactly (largest remainders get the leftover
    tokens, earlier entries first on ties); all-zero weights split evenly.
    ``None`` (unknown) stays unknown.
    """
    if total is None:
        return [None] * len(weights)
    basis = list(weights) if sum(weights) > 0 else [1] * len(weights)
    scale = sum(basis)
    parts = [divmod(total * weight, scale) for weight in basis]
    shares = [share for share, _ in parts]
    leftover = total - sum(shares)
    for i in sorted(range(len(parts)), key=lambda i: -parts[i][1])[:leftover]:
        shares[i] += 1
    return list(shares)
