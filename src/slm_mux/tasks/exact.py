"""The ``exact`` task: whitespace-normalized string equality (the default for imported data)."""

from __future__ import annotations

from slm_mux.tasks.base import Message, Question, Task


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
        for line in reversed(text.strip().splitlines()):
            if line.strip().lower().startswith("answer:"):
                answer = line.split(":", 1)[1].strip()
                return answer or None
        stripped = text.strip()
        return stripped.splitlines()[-1].strip() if stripped else None

    def canonical(self, answer: str) -> str:
        return " ".join(answer.split())
