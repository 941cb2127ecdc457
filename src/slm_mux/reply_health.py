"""Replies that say nothing: a model whose replies are mostly empty or unreadable is named.

A model behind a server with the wrong chat template (Gemma behind llama.cpp without
``--chat_format gemma``) answers every question with empty text; a model that ignores
the answer format writes replies the task cannot read. Neither is an error, so without
a word they show up only as a model without votes. One rule, for ``collect``, ``ask``,
``serve`` and ``compare``: once a model has given at least :data:`MIN_REPLIES` replies
and at least :data:`HIGH_RATE` of them are empty or have no answer the task can read,
a warning (on the ``slm_mux`` logger, once per model) names the model, the counts and
one such reply, cut to :data:`SAMPLE_CHARS` characters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slm_mux.engine import Answer
    from slm_mux.sample import Sample

HIGH_RATE = 0.5
"""The share of a model's replies, empty or unreadable, that gets it named."""
MIN_REPLIES = 3
"""Replies a model must have given before the rule applies (the default k)."""
SAMPLE_CHARS = 80
"""The most characters of a reply a warning quotes."""

log = logging.getLogger("slm_mux")


@dataclass
class _Count:
    """One model's replies so far: how many, how many empty, how many unreadable."""

    replies: int = 0
    empty: int = 0
    unread: int = 0
    sample: str = ""
    """The first unreadable reply (empty while every bad reply was empty)."""


def _quoted(text: str) -> str:
    short = text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"
    return repr(short)


class ReplyHealth:
    """Each model's empty and unreadable replies, and a warning once the rule holds."""

    def __init__(self) -> None:
        self._counts: dict[str, _Count] = {}
        self._warned: set[str] = set()

    def add(
        self, model: str, texts: Sequence[str], answers: Sequence[str | None] | None = None
    ) -> None:
        """Count ``model``'s replies ``texts``; ``answers`` are the task's readings of them
        (``None``: no task read them, so only empty replies count)."""
        count = self._counts.setdefault(model, _Count())
        for i, text in enumerate(texts):
            count.replies += 1
            if not text.strip():
                count.empty += 1
            elif answers is not None and answers[i] is None:
                count.unread += 1
                count.sample = count.sample or text

    def add_many(
        self, texts: Mapping[str, Sequence[str]], answers: Mapping[str, Sequence[str | None]]
    ) -> None:
        """:meth:`add` for each model of ``texts``, with its ``answers``."""
        for model, replies in texts.items():
            self.add(model, replies, answers[model])

    def add_samples(self, samples: Iterable[Sample]) -> None:
        """Count stored samples (their text and extracted answer; a sample stored without
        its text is not counted)."""
        for sample in samples:
            if sample.text is not None:
                self.add(sample.model, [sample.text], [sample.answer])

    def add_answer(self, answer: Answer) -> None:
        """Count each model's samples behind a vote's live answer (a model that failed
        has none; a discussion method keeps no samples)."""
        for model, samples in answer.samples.items():
            texts = [completion.text for completion in samples.completions]
            if samples.error is None and len(texts) == len(samples.answers):
                self.add(model, texts, samples.answers)

    def problems(self) -> dict[str, str]:
        """What the rule finds, by model: ``6 of 6 replies are empty ('')``, ``3 of 4
        replies have no answer the task can read, e.g. '...'``, or both with their counts."""
        found = {}
        for model, count in self._counts.items():
            bad = count.empty + count.unread
            if count.replies < MIN_REPLIES or bad < HIGH_RATE * count.replies:
                continue
            if not count.unread:
                found[model] = f"{bad} of {count.replies} replies are empty ('')"
                continue
            what = "have no answer the task can read"
            if count.empty:
                what = f"are empty ({count.empty}) or {what} ({count.unread})"
            found[model] = f"{bad} of {count.replies} replies {what}, e.g. {_quoted(count.sample)}"
        return found

    def warn(self) -> None:
        """Log a warning for each model the rule finds and that was not named before."""
        for model, problem in self.problems().items():
            if model not in self._warned:
                self._warned.add(model)
                log.warning(
                    "model %r: %s; check its chat template, prompt and answer format",
                    model,
                    problem,
                )
