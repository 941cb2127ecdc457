"""What every orchestration method shares: the caller it talks through and its outcome.

A method is a pure async function over a :class:`Caller`: it holds no store, backend or
global state, so given the same replies it makes the same calls and reaches the same
answer. The calls of one round, layer or verification go out together
(:func:`call_all`); a call whose model fails (``BackendError``) is left out and noted in
the outcome's ``detail["failures"]``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from slm_mux.errors import BackendError, InputError
from slm_mux.selection import encode, majority
from slm_mux.tasks.base import Message, Question, Task


class Caller(Protocol):
    """Sends (or replays from the store) one call for the current question."""

    async def __call__(
        self, model: str, step: str, messages: list[Message], *, n: int = 1
    ) -> list[str]:
        """The ``n`` reply texts of ``model`` to ``messages``.

        ``step`` names the call within the question's transcript, unique per
        (step, model): ``"round2"``, ``"layer1"``, ``"aggregate"``, ``"generate"``,
        ``"verify/c03/final-answer"``. Raises ``BackendError`` if the model fails
        after retries.
        """
        ...


@dataclass(frozen=True)
class MethodOutcome:
    """A method's result on one question.

    ``answer`` is the extracted final answer (``None``: no answer). ``first_round`` holds
    each model's extracted answers in round or layer 1 (debate and moa; for the groupthink
    counts), ``detail`` anything else worth keeping, JSON-able.
    """

    answer: str | None
    first_round: dict[str, list[str | None]] | None = None
    detail: dict[str, Any] = field(default_factory=dict)


Method = Callable[[Question, Task, Sequence[str], Caller, Any], Awaitable[MethodOutcome]]
"""``(question, task, models in pool order, caller, settings) -> outcome``."""


@dataclass(frozen=True)
class Settings:
    """Base of the methods' option dataclasses (frozen, every field with a default)."""

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-able dict (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True)
class Call:
    """One call a method wants to make: ``n`` replies of ``model`` to ``messages``."""

    model: str
    step: str
    messages: list[Message]
    n: int = 1


async def call_all(
    call: Caller, calls: Sequence[Call]
) -> tuple[list[list[str] | None], list[dict[str, Any]]]:
    """Send ``calls`` concurrently; their replies in the same order, and the failures.

    A call whose model raises ``BackendError`` gets ``None`` and an entry
    ``{"step", "model", "error", "retryable"}`` in the failures; any other error propagates.
    """

    async def one(spec: Call) -> list[str] | BackendError:
        try:
            return await call(spec.model, spec.step, spec.messages, n=spec.n)
        except BackendError as error:
            return error

    results = await asyncio.gather(*(one(spec) for spec in calls))
    replies: list[list[str] | None] = []
    failures: list[dict[str, Any]] = []
    for spec, result in zip(calls, results, strict=True):
        if isinstance(result, BackendError):
            failures.append(
                {
                    "step": spec.step,
                    "model": spec.model,
                    "error": str(result),
                    "retryable": result.retryable,
                }
            )
            replies.append(None)
        else:
            replies.append(result)
    return replies, failures


def vote(answers: Sequence[str | None], task: Task) -> str | None:
    """Plain majority of ``answers`` under the task's equivalence; ties to the earliest.

    ``None`` and blank answers are no vote; with no vote at all the result is ``None``.
    The winner is the first answer string given in the winning class.
    """
    codes, representative = encode([list(answers)], task.cluster)
    if codes.size == 0:
        return None
    code, _count = majority(codes[0])
    return representative[int(code)] if int(code) >= 0 else None


def first_round_majority(first_round: dict[str, list[str | None]], task: Task) -> str | None:
    """The majority of a method's first-round answers, pooled in model order (see :func:`vote`)."""
    return vote([answer for answers in first_round.values() for answer in answers], task)


def pool_model(name: str | None, models: Sequence[str], role: str) -> str:
    """The pool model playing ``role`` (``name``, or the first model when ``None``).

    Raises ``InputError`` naming ``name`` when it is not in the pool.
    """
    if not models:
        raise InputError(f"the {role} needs a pool of at least one model")
    if name is None:
        return models[0]
    if name not in models:
        raise InputError(
            f"the {role} {name!r} is not a pool model; choose from {', '.join(models)}"
        )
    return name
