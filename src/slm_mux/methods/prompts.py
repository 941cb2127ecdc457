"""The prompts of debate, moa and mav, written in our own words.

They follow the structure of the original methods' prompts (Du et al. 2023; Wang et al.
2024; Lifshitz et al. 2025) without copying their text. Other models are never named:
debate labels them by pool position ("Agent 2"), moa and mav by number only.
"""

from __future__ import annotations

from collections.abc import Sequence

from slm_mux.tasks.base import Message, Question, Task


def posed(task: Task, question: Question) -> str:
    """The question as the task poses it (its user messages: options and answer format)."""
    return "\n\n".join(m["content"] for m in task.messages(question) if m["role"] == "user")


def debate_follow_up(problem: str, others: Sequence[tuple[int, str]]) -> str:
    """The user turn of a later debate round: the other agents' replies, then the ask.

    ``others`` pairs each other agent's pool position (0-based) with its previous reply.
    """
    shown = "\n\n".join(f"Agent {position + 1}:\n{reply}" for position, reply in others)
    heard = (
        f"Other agents answered the same question as follows.\n\n{shown}\n\n"
        if others
        else "No other agent's answer is available this round.\n\n"
    )
    return (
        f"{heard}"
        "Use their reasoning as extra information: check your own solution and theirs "
        "step by step, then answer the question again. Here it is once more:\n\n"
        f"{problem}"
    )


def synthesis_instruction(responses: Sequence[str]) -> str:
    """The moa system message: merge the numbered ``responses`` into one better answer."""
    listed = "\n".join(f"{number}. {text}" for number, text in enumerate(responses, start=1))
    return (
        "Several assistants have answered the user's latest question; their answers are "
        "listed below. Some may be wrong or misleading, so weigh each one critically rather "
        "than copying any of them. Write one answer of your own that is correct, clear and "
        "well reasoned, and follow every instruction in the question, including the form of "
        "the final answer.\n\n"
        f"Answers:\n{listed}"
    )


def with_system(instruction: str, messages: list[Message]) -> list[Message]:
    """``messages`` with ``instruction`` as the system message (appended to one already there)."""
    if messages and messages[0]["role"] == "system":
        head = {"role": "system", "content": f"{messages[0]['content']}\n\n{instruction}"}
        return [head, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


ASPECTS: dict[str, str] = {
    "final-answer": (
        "Judge only the final answer. Work out the answer yourself if that helps, and "
        "approve only if the solution's final answer is right."
    ),
    "steps": (
        "Go through the solution one step at a time and look for any mistake in logic, "
        "arithmetic or reading of the problem. Approve only if every step holds."
    ),
}
"""The mav verification aspects: name -> what the verifier checks."""


def verification(problem: str, solution: str, aspect: str) -> str:
    """The mav prompt asking for a binary verdict on ``solution`` under ``aspect``."""
    return (
        "You are reviewing a proposed solution to a problem.\n\n"
        f"Problem:\n{problem}\n\n"
        f"Proposed solution:\n{solution}\n\n"
        f"Your check: {ASPECTS[aspect]}\n\n"
        "Explain briefly, then end with one last line that reads exactly "
        "'Verdict: approve' or 'Verdict: reject'."
    )
