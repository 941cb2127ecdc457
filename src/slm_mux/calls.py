"""Every model call a method makes on one question goes through a :class:`Caller`.

The base class resolves the model, derives the call's seed (:func:`seed_key`,
:func:`sample_seed`) and keeps the question's transcript and totals; a variant says how
one call is made: :class:`LiveCaller` sends it through the member's backend,
:class:`slm_mux.compare.RecordingCaller` replays it from the store or sends and stores it.

Two kinds of call: a method's own call (``caller(model, step, messages, n=...)``, the
:class:`~slm_mux.methods.Caller` protocol, seeded by its transcript key) and a draw of
independent samples (:meth:`Caller.samples`, seeded so that sample ``i`` of a question
has the same seed however the samples are split into requests).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slm_mux.backends.base import Completion
from slm_mux.errors import BackendError, InputError
from slm_mux.members import Member
from slm_mux.tasks.base import Message, Question


def sample_seed(seed: int | None, key: str, first_sample: int) -> int | None:
    """The seed of a request whose samples start at number ``first_sample``.

    It is a per-``key`` base (31 bits of SHA-256 of the member's seed and ``key``, stable
    across runs and processes) plus ``first_sample``. Backends give the ``j``-th sample of
    a request seeded ``s`` the seed ``s + j`` where they can, so sample ``i`` has seed
    ``base + i`` however the samples are split into requests (one request of ``k``, or
    several rounds of adaptive sampling).
    """
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return (int.from_bytes(digest[:4], "big") >> 1) + first_sample


def seed_key(question_id: str, method: str, step: str, model: str) -> str:
    """The key that seeds (and names) one call of a method's transcript."""
    return f"{question_id}:{method}:{step}:{model}"


@dataclass(frozen=True)
class Sent:
    """What one call returned: its completions in order and the responses it took."""

    completions: list[Completion]
    responses: int

    @property
    def texts(self) -> list[str]:
        """The reply texts, in order."""
        return [c.text for c in self.completions]

    @property
    def prompt_tokens(self) -> int | None:
        """Prompt tokens summed over the replies (``None``: some reply did not say)."""
        return _summed([c.prompt_tokens for c in self.completions])

    @property
    def completion_tokens(self) -> int | None:
        """Completion tokens summed over the replies (``None``: some reply did not say)."""
        return _summed([c.completion_tokens for c in self.completions])


def _summed(counts: Sequence[int | None]) -> int | None:
    return None if any(c is None for c in counts) else sum(c or 0 for c in counts)


class Caller(ABC):
    """The calls of one method on one question (subclasses say how a call is made).

    ``record`` keeps, in the order the calls were made, each call's step, model and
    replies (``None`` while in flight or failed); ``prompt_tokens`` and
    ``completion_tokens`` sum the replies received (unknown counts as 0), ``responses``
    counts the backend responses per model, including those of calls that then failed.
    """

    def __init__(self, members: Mapping[str, Member], question: Question, method: str) -> None:
        self.members = members
        self.question = question
        self.method = method
        self.record: list[tuple[str, str, list[str] | None]] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.responses: Counter[str] = Counter()

    def member(self, model: str) -> Member:
        """The pool member named ``model`` (``InputError`` when there is none)."""
        member = self.members.get(model)
        if member is None:
            raise InputError(f"model {model!r} is not in the pool")
        return member

    def sample_key(self, model: str) -> str:
        """The key seeding ``model``'s independent samples of the question: its id."""
        return self.question.id

    async def __call__(
        self, model: str, step: str, messages: list[Message], *, n: int = 1
    ) -> list[str]:
        """The ``n`` replies of ``model`` to ``messages`` (a method's own call)."""
        member = self.member(model)
        key = seed_key(self.question.id, self.method, step, model)
        sent = await self._logged(member, step, messages, n, sample_seed(member.seed, key, 0))
        return sent.texts

    async def samples(self, member: Member, messages: list[Message], numbers: range) -> Sent:
        """Samples ``numbers`` of ``member``'s independent samples (step ``sample@FIRST``)."""
        seed = sample_seed(member.seed, self.sample_key(member.name), numbers[0])
        return await self._logged(member, f"sample@{numbers[0]}", messages, len(numbers), seed)

    async def _logged(
        self, member: Member, step: str, messages: list[Message], n: int, seed: int | None
    ) -> Sent:
        slot = len(self.record)
        self.record.append((step, member.name, None))
        sent = await self.send(member, step, messages, n, seed)
        self.record[slot] = (step, member.name, sent.texts)
        self.prompt_tokens += sent.prompt_tokens or 0
        self.completion_tokens += sent.completion_tokens or 0
        return sent

    @abstractmethod
    async def send(
        self, member: Member, step: str, messages: list[Message], n: int, seed: int | None
    ) -> Sent:
        """Make one call; raises ``BackendError`` when the model fails."""

    async def _through_backend(
        self, member: Member, messages: list[Message], n: int, seed: int | None
    ) -> Sent:
        """One call of ``n`` replies through the member's backend, with its settings."""
        found: dict[int, Completion] = {}
        responses = 0
        async for batch in member.backend.stream(member.request(messages, n, seed)):
            responses += 1
            self.responses[member.name] += 1
            found.update(batch)
        if sorted(found) != list(range(n)):
            raise BackendError(f"model {member.name!r}: got {len(found)} of {n} replies")
        return Sent([found[i] for i in range(n)], responses)


class LiveCaller(Caller):
    """Sends every call through the member's backend."""

    async def send(
        self, member: Member, step: str, messages: list[Message], n: int, seed: int | None
    ) -> Sent:
        return await self._through_backend(member, messages, n, seed)
