"""A scripted :class:`~slm_mux.methods.Caller` for the methods' tests.

Each model answers through a behaviour ``(step, messages, n) -> replies``; every call is
recorded, and the number of calls in flight at once is counted (each call yields to the
event loop once before it answers, so calls sent together overlap and calls sent one
after another never do).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from slm_mux.errors import BackendError
from slm_mux.tasks.base import Message

Behaviour = Callable[[str, list[Message], int], list[str]]


@dataclass(frozen=True)
class Record:
    """One call as the method made it."""

    model: str
    step: str
    messages: list[Message]
    n: int


class ScriptedCaller:
    """Answers by model behaviour; ``fail`` lists (model, step) calls that raise BackendError."""

    def __init__(
        self, behaviours: Mapping[str, Behaviour], fail: Collection[tuple[str, str]] = ()
    ) -> None:
        self.behaviours = behaviours
        self.fail = set(fail)
        self.calls: list[Record] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(
        self, model: str, step: str, messages: list[Message], *, n: int = 1
    ) -> list[str]:
        self.calls.append(Record(model, step, [dict(m) for m in messages], n))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            if (model, step) in self.fail:
                raise BackendError(f"model {model!r} failed at {step}")
            return self.behaviours[model](step, messages, n)
        finally:
            self.in_flight -= 1

    def steps(self, model: str) -> list[str]:
        """The steps ``model`` was called for, in call order."""
        return [record.step for record in self.calls if record.model == model]

    def call(self, model: str, step: str) -> Record:
        """The one call of ``model`` at ``step``."""
        (found,) = [r for r in self.calls if r.model == model and r.step == step]
        return found


def says(answer: str, tag: str = "work") -> Behaviour:
    """A stubborn model: always ``answer``; the text names the tag and step, never a model."""
    return lambda step, _messages, n: [f"{tag}-{step} #### {answer}"] * n


_SHOWN = re.compile(r"#### (-?\d+)")


def copier(initial: str, tag: str = "copy") -> Behaviour:
    """Answers ``initial`` first, then the majority of the answers shown in the last message."""

    def behaviour(step: str, messages: list[Message], n: int) -> list[str]:
        shown = _SHOWN.findall(messages[-1]["content"]) if messages[-1]["role"] == "user" else []
        answer = Counter(shown).most_common(1)[0][0] if shown else initial
        return [f"{tag}-{step} #### {answer}"] * n

    return behaviour
