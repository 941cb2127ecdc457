"""The ``gpqa`` task: four-option multiple choice, answered with a letter.

Options are shuffled per question by a generator seeded from a SHA-256 of the
question id, so a question always shows the same order and the reference is
the letter of the correct option *after* shuffling.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

from slm_mux.tasks.base import Message, Question, Task

LETTERS = "ABCD"

_LETTER = r"(?<!\w)\(?\**([A-D])\**\)?(?!\w)"
_TIERS = tuple(
    re.compile(pattern)
    for pattern in (
        # \boxed{B}, \boxed{(B)}, \boxed{\text{B}}
        r"\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{)?\s*\(?([A-D])\)?\s*\}",
        # The answer is (B) / Answer: C / **Answer:** D / final answer is: option A
        r"(?i:answer)(?:\s*\**\s*(?i:is))?\s*\**\s*:?\s*\**\s*(?:(?i:option|choice)\s*)?" + _LETTER,
        # (C) is correct / Option C is the correct answer
        _LETTER + r"\s+(?i:is\s+(?:the\s+)?correct)",
        # a final line holding just the letter: "B", "(B)", "**B.**"
        r"(?m)^[\s*(]*([A-D])[\s*).]*\Z",
    )
)
_LISTED = 3
"""Different letters stated as the answer that make a response a list of options."""
_PREFIX = r"\s*\(?{letter}[).:]?\s+"


def extract_letter(text: str) -> str | None:
    """The option letter a response settles on, from its most explicit phrasing.

    Tried in order, taking the last match of the first kind that occurs:
    ``\\boxed{B}``; ``answer is (B)``/``Answer: B``/``**Answer:** B``;
    ``(B) is correct``; a final line that is only the letter.

    A response whose matches of that kind name three or more different letters lists
    the options instead of choosing one (small models write ``1. The answer is A) …
    2. The answer is B) …``): it has no answer.
    """
    for tier in _TIERS:
        found = tier.findall(text.strip())
        if found:
            return str(found[-1]) if len(set(found)) < _LISTED else None
    return None


def strip_letter_prefixes(options: Sequence[str]) -> list[str]:
    """Options without ``A ``/``(A) ``/``A. `` prefixes, when every option carries its own."""
    cleaned = [option.strip() for option in options]
    if len(cleaned) > len(LETTERS):
        return cleaned
    prefixes = [re.compile(_PREFIX.format(letter=letter)) for letter in LETTERS[: len(cleaned)]]
    if all(p.match(o) for p, o in zip(prefixes, cleaned, strict=True)):
        return [p.sub("", o, count=1).strip() for p, o in zip(prefixes, cleaned, strict=True)]
    return cleaned


def shuffle_seed(question_id: str) -> int:
    """A stable seed for ``question_id`` (SHA-256, unlike the salted built-in ``hash``)."""
    return int.from_bytes(hashlib.sha256(question_id.encode()).digest()[:8], "big")


def shuffled_question(
    question_id: str, text: str, options: Sequence[str], correct: int
) -> Question:
    """A question whose options are shuffled by :func:`shuffle_seed`.

    ``options[correct]`` is the right one; the reference is its letter after shuffling.
    """
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"a question needs 2 to {len(LETTERS)} options, not {len(options)}")
    order = list(range(len(options)))
    random.Random(shuffle_seed(question_id)).shuffle(order)
    return Question(
        id=question_id,
        text=text,
        reference=LETTERS[order.index(correct)],
        choices=tuple(options[i] for i in order),
    )


class GpqaTask(Task):
    """Multiple choice: the prompt lists lettered options; answers are letters."""

    name = "gpqa"

    def messages(self, question: Question) -> list[Message]:
        options = "\n".join(
            f"{letter}) {text}" for letter, text in zip(LETTERS, question.choices, strict=False)
        )
        prompt = "Reason step by step, then end with a line 'Answer: <letter>'."
        return [{"role": "user", "content": f"{question.text.strip()}\n\n{options}\n\n{prompt}"}]

    def extract(self, text: str) -> str | None:
        return extract_letter(text)

    def canonical(self, answer: str) -> str:
        letter = re.fullmatch(r"[\s*(]*([A-Da-d])[\s*).]*", answer)
        return letter[1].upper() if letter else answer.strip().upper()
