"""Mixture-of-Agents (Wang et al. 2024, ``togethercomputer/MoA``).

Layer 1: every pool model answers the task's own prompt. Each further proposer layer:
every model answers again, given a system message that lists all previous-layer
responses (numbered) with an aggregate-and-synthesize instruction, then the task's
messages. Last, the aggregator answers once with the same instruction over the last
proposer layer. The answer is extracted from the aggregator's text; there is no vote.

``layers`` counts the proposer layers plus the aggregator, so the cost is
``M * (layers - 1) + 1`` calls per question for ``M`` models.

Failures: a proposer whose call fails is left out of its layer's list. If a whole layer
fails, or the aggregator does, the answer is ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slm_mux.errors import InputError
from slm_mux.methods.base import (
    Call,
    Caller,
    MethodOutcome,
    Settings,
    call_all,
    pool_model,
)
from slm_mux.methods.prompts import synthesis_instruction, with_system
from slm_mux.methods.registry import method
from slm_mux.tasks.base import Question, Task


@dataclass(frozen=True)
class MoASettings(Settings):
    """``layers``: proposer layers plus the aggregator (default 3: two proposer layers,
    as in the paper's setup). ``aggregator``: the pool model that answers last; ``None``
    means the first pool model (the comparison runner resolves it to the model with the
    best validation accuracy when it has one)."""

    layers: int = 3
    aggregator: str | None = None

    def __post_init__(self) -> None:
        if self.layers < 2:
            raise InputError(
                f"moa layers must be at least 2 (a proposer layer and the aggregator), "
                f"not {self.layers}"
            )


def moa_calls(models: int, settings: MoASettings) -> int:
    """Calls per question: ``M * (layers - 1) + 1``."""
    return models * (settings.layers - 1) + 1


@method(
    "moa",
    kind="discussion",
    order=11,
    summary="Mixture-of-Agents: proposer layers, then an aggregator's synthesis",
    settings=MoASettings,
    calls=moa_calls,
    live=True,
    compare=True,
)
async def moa(
    question: Question,
    task: Task,
    models: Sequence[str],
    call: Caller,
    settings: MoASettings,
) -> MethodOutcome:
    """Run Mixture-of-Agents on ``question``; see the module docstring."""
    aggregator = pool_model(settings.aggregator, models, "moa aggregator")
    messages = task.messages(question)
    responses: list[str] = []
    first: dict[str, list[str | None]] = {}
    failures: list[dict[str, Any]] = []
    for number in range(1, settings.layers):
        prompt = (
            messages if number == 1 else with_system(synthesis_instruction(responses), messages)
        )
        replies, failed = await call_all(
            call, [Call(model, f"layer{number}", prompt) for model in models]
        )
        failures += failed
        if number == 1:
            first = {
                model: [task.answer(question, texts[0])] if texts is not None else []
                for model, texts in zip(models, replies, strict=True)
            }
        responses = [texts[0] for texts in replies if texts is not None]
        if not responses:
            return _outcome(None, first, aggregator, failures)
    final, failed = await call_all(
        call,
        [Call(aggregator, "aggregate", with_system(synthesis_instruction(responses), messages))],
    )
    failures += failed
    text = final[0][0] if final[0] is not None else None
    return _outcome(
        None if text is None else task.answer(question, text), first, aggregator, failures
    )


def _outcome(
    answer: str | None,
    first: dict[str, list[str | None]],
    aggregator: str,
    failures: list[dict[str, Any]],
) -> MethodOutcome:
    """The outcome with its detail: who aggregated, which calls failed."""
    return MethodOutcome(
        answer=answer,
        first_round=first,
        detail={"aggregator": aggregator, "failures": failures},
    )
