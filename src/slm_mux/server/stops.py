"""Stop sequences of a chat request, applied after generation.

Every reply is cut before the first stop sequence it contains, as a server that stops
generating there would return it; :class:`StoppedTask` makes a method extract each
sampled answer from the cut text too, so the answers compared are the ones returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from slm_mux.tasks import Task
from slm_mux.tasks.base import WrappedTask

MAX_STOPS = 4
"""Most stop sequences a request may give (OpenAI's limit)."""


def cut(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of the ``stop`` sequences in it."""
    ends = [found for sequence in stop if (found := text.find(sequence)) >= 0]
    return text[: min(ends)] if ends else text


class StoppedTask(WrappedTask):
    """``base`` with every response cut at ``stop`` before its answer is extracted."""

    def __init__(self, base: Task, stop: Sequence[str]) -> None:
        super().__init__(base)
        self.stop = tuple(stop)

    def extract(self, text: str) -> str | None:
        return self.base.extract(cut(text, self.stop))
