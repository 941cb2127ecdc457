"""Multi-Agent Verification (Lifshitz et al. 2025, ``Shalev-Lifshitz/MultiAgentVerification``).

A generator proposes ``candidates`` solutions in one call (``n = candidates``). Every
pool model then verifies every candidate under every aspect (one call each) and ends with
a binary verdict. The candidate with the highest approval fraction wins; ties go to the
earliest candidate. The answer is extracted from the winning candidate.

Cost: ``1 + M * candidates * len(aspects)`` calls per question for ``M`` verifiers. The
official default of 16 candidates with many verifiers means hundreds of calls per
question; the default here, 4 candidates x 2 aspects, keeps a 100-question run of a
3-model pool at 2,500 calls.

Failures: a failed verification is left out (the fraction is over the verdicts
received); a candidate with no verdict cannot win; if the generator fails or no
candidate gets a verdict, the answer is ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from slm_mux.errors import InputError
from slm_mux.methods.base import Call, Caller, MethodOutcome, Settings, call_all, pool_model
from slm_mux.methods.prompts import ASPECTS, posed, verification
from slm_mux.methods.registry import method
from slm_mux.tasks.base import Question, Task


@dataclass(frozen=True)
class MAVSettings(Settings):
    """``candidates``: solutions the generator proposes (default 4). ``aspects``: names of
    the verification prompts, from :data:`~slm_mux.methods.prompts.ASPECTS` (default both,
    final answer and steps). ``generator``: the pool model that proposes; ``None`` means the
    first pool model (the comparison runner resolves it like moa's aggregator)."""

    candidates: int = 4
    aspects: tuple[str, ...] = ("final-answer", "steps")
    generator: str | None = None

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise InputError(f"mav candidates must be at least 1, not {self.candidates}")
        if not self.aspects:
            raise InputError("mav needs at least one aspect")
        for aspect in self.aspects:
            if aspect not in ASPECTS:
                raise InputError(f"unknown mav aspect {aspect!r}; choose from {', '.join(ASPECTS)}")


def mav_calls(models: int, settings: MAVSettings) -> int:
    """Calls per question: ``1 + M * candidates * len(aspects)``."""
    return 1 + models * settings.candidates * len(settings.aspects)


_VERDICT_MARK = re.compile(r"verdict", re.IGNORECASE)
_VERDICT_WORD = re.compile(
    r"\b(approved?|accept(?:ed)?|yes|correct|true|rejected|reject|no|incorrect|wrong|false)\b",
    re.IGNORECASE,
)
_APPROVING = {"approve", "approved", "accept", "accepted", "yes", "correct", "true"}


def approves(reply: str) -> bool:
    """Whether a verifier's reply approves: the word after the last "Verdict", else the
    last verdict word (approve/reject, yes/no, correct/incorrect...); none = reject."""
    return read_verdict(reply)[0]


def read_verdict(reply: str) -> tuple[bool, bool]:
    """(whether ``reply`` approves, as :func:`approves`; whether it had a "Verdict" line
    with a verdict word: the replies without one are counted as ``unparsed_verdicts``)."""
    marks = list(_VERDICT_MARK.finditer(reply))
    if marks:
        word = _VERDICT_WORD.search(reply, marks[-1].end())
        if word is not None:
            return word.group(1).lower() in _APPROVING, True
    words = _VERDICT_WORD.findall(reply)
    return bool(words) and words[-1].lower() in _APPROVING, False


@method(
    "mav",
    kind="discussion",
    order=12,
    summary="Multi-Agent Verification: a generator's candidates, the most approved by verifiers",
    settings=MAVSettings,
    calls=mav_calls,
    live=True,
    compare=True,
)
async def mav(
    question: Question,
    task: Task,
    models: Sequence[str],
    call: Caller,
    settings: MAVSettings,
) -> MethodOutcome:
    """Run Multi-Agent Verification on ``question``; see the module docstring."""
    generator = pool_model(settings.generator, models, "mav generator")
    proposed, failures = await call_all(
        call, [Call(generator, "generate", task.messages(question), n=settings.candidates)]
    )
    candidates = proposed[0]
    if candidates is None:
        return MethodOutcome(answer=None, detail={"approvals": [], "failures": failures})
    problem = posed(task, question)
    checks = [
        (index, Call(model, f"verify/c{index:02d}/{aspect}", _ask(problem, text, aspect)))
        for index, text in enumerate(candidates)
        for aspect in settings.aspects
        for model in models
    ]
    replies, failed = await call_all(call, [spec for _, spec in checks])
    verdicts: list[list[bool]] = [[] for _ in candidates]
    unparsed = 0
    for (index, _spec), texts in zip(checks, replies, strict=True):
        if texts is not None:
            approved, marked = read_verdict(texts[0])
            verdicts[index].append(approved)
            unparsed += not marked
    approvals = [sum(votes) / len(votes) if votes else None for votes in verdicts]
    ranked = [i for i, fraction in enumerate(approvals) if fraction is not None]
    # max() keeps the first of equal fractions: ties go to the earliest candidate.
    best = max(ranked, key=lambda i: approvals[i] or 0.0, default=None)
    return MethodOutcome(
        answer=None if best is None else task.answer(question, candidates[best]),
        detail={
            "approvals": approvals,
            "chosen": best,
            "failures": failures + failed,
            "verdicts": sum(len(votes) for votes in verdicts),
            "unparsed_verdicts": unparsed,
        },
    )


def _ask(problem: str, solution: str, aspect: str) -> list[dict[str, str]]:
    """The messages of one verification call."""
    return [{"role": "user", "content": verification(problem, solution, aspect)}]
