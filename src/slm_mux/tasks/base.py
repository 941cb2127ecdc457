"""What a task is: a prompt builder, an answer extractor and a grader.

Replies are read with :meth:`Task.answer` (the question at hand, then :meth:`Task.extract`);
``extract`` alone reads a text that answers no question of ours (a harness's target).

The grader also decides which answers are the *same vote*: :meth:`Task.cluster`
groups answers that are equivalent under it (``\\frac{1}{2}``, ``1/2`` and
``0.5`` for math), and the selection rule counts votes per group.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

Message = dict[str, str]

ANSWER_FORMAT = "Answer format:"
"""Opens a system paragraph that only says how to write the answer: a chat template
that drops system turns drops it too (the in-process backend folds the rest)."""


def empty_question(text: str) -> str | None:
    """Why ``text`` cannot be asked (it has no non-blank character), or ``None``: the one
    rule of ``ask`` and ``serve``."""
    return None if text.strip() else f"the question is empty: {text!r}"


def question_hash(text: str) -> str:
    """The id of a question that has none: sha1 of its stripped text, 12 hex digits.

    It depends on the text alone, so the same question gets the same id in every
    file and every run, and a different question a different id.
    """
    return hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Question:
    """One benchmark item: its id, the text shown to the model, the reference answer.

    ``choices`` holds the options of a multiple-choice item, in shown order.
    """

    id: str
    text: str
    reference: str
    choices: tuple[str, ...] = field(default_factory=tuple)


class Task(ABC):
    """A task: builds prompts, extracts answers from responses, grades and clusters them."""

    name: str

    exact_equivalence: bool = True
    """Whether two answers are one vote exactly when their normal forms are equal, so
    grading takes microseconds. A task whose :meth:`equivalent` does more (math-verify)
    declares ``False``, and its voting runs off the event loop."""

    @abstractmethod
    def messages(self, question: Question) -> list[Message]:
        """Chat messages that ask a model ``question``."""

    @abstractmethod
    def extract(self, text: str) -> str | None:
        """The answer in a model's response, or ``None`` when there is none."""

    def answer(self, question: Question, text: str) -> str | None:
        """The answer in ``text``, a model's reply to ``question``: :meth:`extract` of the
        reply, after a verbatim repeat of the question at its start.

        A model that only repeats the question (a base model behind a chat template
        does) states no answer, though the question's own numbers would read as one.
        """
        reply = text.lstrip()
        asked = question.text.strip()
        if asked and reply.startswith(asked):
            reply = reply[len(asked) :]
        return self.extract(reply)

    @abstractmethod
    def canonical(self, answer: str) -> str:
        """A cheap normal form: answers with equal normal forms are equivalent."""

    def grade(self, answer: str | None, reference: str) -> bool:
        """Whether ``answer`` is correct against ``reference``."""
        if answer is None or not answer.strip():
            return False
        return self.canonical(answer) == self.canonical(reference)

    def equivalent(self, first: str, second: str) -> bool:
        """Whether two answers are the same vote (beyond equal normal forms)."""
        return self.canonical(first) == self.canonical(second)

    def cluster(self, answers: Sequence[str]) -> list[int]:
        """Equivalence-class id per answer, numbered by first appearance.

        Answers with equal normal forms share a class; the remaining class
        representatives are merged pairwise with :meth:`equivalent`.
        """
        by_form: dict[str, int] = {}
        representatives: list[str] = []
        classes: list[int] = []
        for answer in answers:
            form = self.canonical(answer)
            if form not in by_form:
                match = next(
                    (i for i, rep in enumerate(representatives) if self.equivalent(rep, answer)),
                    None,
                )
                if match is None:
                    match = len(representatives)
                    representatives.append(answer)
                by_form[form] = match
            classes.append(by_form[form])
        return classes


class WrappedTask(Task):
    """``base`` with something changed: every method is ``base``'s until a subclass
    overrides it (a request's own messages, a reply cut at stop sequences)."""

    def __init__(self, base: Task) -> None:
        self.base = base
        self.name = base.name
        self.exact_equivalence = base.exact_equivalence

    def messages(self, question: Question) -> list[Message]:
        return self.base.messages(question)

    def extract(self, text: str) -> str | None:
        return self.base.extract(text)

    def canonical(self, answer: str) -> str:
        return self.base.canonical(answer)

    def grade(self, answer: str | None, reference: str) -> bool:
        return self.base.grade(answer, reference)

    def equivalent(self, first: str, second: str) -> bool:
        return self.base.equivalent(first, second)

    def cluster(self, answers: Sequence[str]) -> list[int]:
        return self.base.cluster(answers)
