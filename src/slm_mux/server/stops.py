"""Stop sequences of a chat request, applied after generation.

Every reply is cut before the first stop sequence it contains, as a server that stops
generating there would return it; :class:`StoppedTask` makes a method extract each
sampled answer from the cut text too, so the answers compared are the ones returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from slm_mux.tasks import Message, Question, Task

MAX_STOPS = 4
"""Most stop sequences a request may give (OpenAI's limit)."""


def cut(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of the ``stop`` sequences in it."""
    ends = [found for sequence in stop if (found := text.find(sequence)) >= 0]
    return text[: min(ends)] if ends else text


class StoppedTask(Task):
    """``base`` with every response cut at ``stop`` before its answer is extracted."""

    def __init__(self, base: Task, stop: Sequence[str]) -> None:
        self.base = base
        self.stop = tuple(stop)
        self.name = base.name
        self.exact_equivalence = base.exact_equivalence

    def messages(self, question: Question) -> list[Message]:
        return self.base.messages(question)

    def extract(self, text: str) -> str | None:
        return self.base.extract(cut(text, self.stop))

    def canonical(self, answer: str) -> str:
        return self.base.canonical(answer)

    def grade(self, answer: str | None, reference: str) -> bool:
        return self.base.grade(answer, reference)

    def equivalent(self, first: str, second: str) -> bool:
        return self.base.equivalent(first, second)

    def cluster(self, answers: Sequence[str]) -> list[int]:
        return self.base.cluster(answers)
