"""LLM-Debate (Du et al. 2023, ``composable-models/llm_multiagent_debate``).

Every pool model is an agent. In round 1 each answers the task's own prompt alone. In
each later round, every agent's own conversation is extended with its previous reply
(an assistant message) and a user message quoting the *other* agents' previous-round
replies, asking it to use them and answer again. The final answer is the plain majority
of the last round's extracted answers under the task's equivalence, ties to pool order.

Cost: ``M * rounds`` calls per question for ``M`` agents.

Failures: an agent whose call fails is left out of that round (its reply is neither
shown to the others nor counted); it rejoins the next round from its last reply. If
every agent fails the last round, the answer is ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slm_mux.errors import InputError
from slm_mux.methods.base import Call, Caller, MethodOutcome, Settings, call_all, vote
from slm_mux.methods.prompts import debate_follow_up, posed
from slm_mux.methods.registry import method
from slm_mux.tasks.base import Message, Question, Task


@dataclass(frozen=True)
class DebateSettings(Settings):
    """``rounds``: rounds of answers, the first one independent (default 2, as the
    official GSM8K/MMLU setting of 3 agents x 2 rounds)."""

    rounds: int = 2

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise InputError(f"debate rounds must be at least 1, not {self.rounds}")


def debate_calls(models: int, settings: DebateSettings) -> int:
    """Calls per question: ``M * rounds``."""
    return models * settings.rounds


@method(
    "debate",
    kind="discussion",
    order=10,
    summary="agents answer, read each other's replies and answer again; the last round's majority",
    settings=DebateSettings,
    calls=debate_calls,
    live=True,
    compare=True,
)
async def debate(
    question: Question,
    task: Task,
    models: Sequence[str],
    call: Caller,
    settings: DebateSettings,
) -> MethodOutcome:
    """Run the debate on ``question``; see the module docstring."""
    problem = posed(task, question)
    conversations: list[list[Message]] = [task.messages(question) for _ in models]
    previous: list[str | None] = [None] * len(models)
    rounds: list[dict[str, str | None]] = []
    failures: list[dict[str, Any]] = []
    for number in range(1, settings.rounds + 1):
        prompts = [
            conversation
            if number == 1
            else [*conversation, {"role": "user", "content": _follow_up(problem, previous, i)}]
            for i, conversation in enumerate(conversations)
        ]
        calls = [
            Call(model, f"round{number}", prompt)
            for model, prompt in zip(models, prompts, strict=True)
        ]
        replies, failed = await call_all(call, calls)
        failures += failed
        previous = [texts[0] if texts is not None else None for texts in replies]
        for i, reply in enumerate(previous):
            if reply is not None:
                conversations[i] = [*prompts[i], {"role": "assistant", "content": reply}]
        rounds.append(
            {
                model: task.answer(question, reply)
                for model, reply in zip(models, previous, strict=True)
                if reply is not None
            }
        )
    first = {model: [rounds[0][model]] if model in rounds[0] else [] for model in models}
    return MethodOutcome(
        answer=vote(list(rounds[-1].values()), task),
        first_round=first,
        detail={"rounds": rounds, "failures": failures},
    )


def _follow_up(problem: str, previous: Sequence[str | None], own: int) -> str:
    """Agent ``own``'s follow-up message: the other agents' replies of the last round."""
    others = [(i, reply) for i, reply in enumerate(previous) if i != own and reply is not None]
    return debate_follow_up(problem, others)
