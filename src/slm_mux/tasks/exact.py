"""The ``exact`` task: whitespace-normalized string equality (the default for imported data)."""

from __future__ import annotations

import re

from slm_mux.tasks.base import Message, Question, Task

# ``\s`` after the colon also crosses a line break: "Answer:\nParis" answers "Paris".
_ANSWER_LINE = re.compile(
    r"^[\s*_#>]*(?:final\s+)?answer[\s*_]*:[\s*_]*(?P<answer>.*?)[ \t*_]*$",
    re.IGNORECASE | re.MULTILINE,
)


class ExactTask(Task):
    """Answers are equal when they match after collapsing whitespace."""

    name = "exact"

    def messages(self, question: Question) -> list[Message]:
        return [
            {
                "role": "user",
                "content": f"{question.text}\n\nEnd your reply with a line 'Answer: <answer>'.",
            }
        ]

    def extract(self, text: str) -> str | None:
        """The last ``Answer: ...`` line (also ``**Answer:**``, ``Final answer:``).

        An empty answer line takes the next non-blank line; with no answer
        line, the last line of the response is the answer.
        """
        answers = [match["answer"] for match in _ANSWER_LINE.finditer(text)]
        if answers:
            return answers[-1] or None
        stripped = text.strip()
        return stripped.splitlines()[-1].strip() if stripped else None

    def canonical(self, answer: str) -> str:
        return " ".join(answer.split())
