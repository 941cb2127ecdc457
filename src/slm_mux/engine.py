"""Live SLM-MUX: every model samples k answers at once, the selection rule decides.

Models never see each other's answers. All models are asked concurrently and
each asks for its k samples in one request where the backend allows it, so
the wall time of a question is about that of the slowest model's single
generation, not k sequential calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from slm_mux.backends.base import Batch, Completion, GenerationRequest, gather_stream
from slm_mux.errors import BackendError, InputError, SlmMuxError
from slm_mux.members import Member, close_members
from slm_mux.selection import Decision, decide
from slm_mux.tasks import Question, Task, get_task


@dataclass(frozen=True)
class ModelSamples:
    """What one model returned for one question (``responses``: how many responses
    the backend took); ``error`` when it failed."""

    model: str
    completions: list[Completion]
    answers: list[str | None]
    error: str | None = None
    responses: int = 0


@dataclass(frozen=True)
class MuxAnswer:
    """The final answer, the model it came from, its confidence and every model's votes."""

    question: str
    answer: str | None
    model: str | None
    confidence: float
    votes: dict[str, dict[str, int]]
    samples: dict[str, ModelSamples] = field(repr=False)
    latency_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (no response texts, no secrets)."""
        return {
            "answer": self.answer,
            "model": self.model,
            "confidence": self.confidence,
            "votes": self.votes,
            "errors": {m: s.error for m, s in self.samples.items() if s.error},
            "latency_s": round(self.latency_s, 4),
            "tokens": {
                m: sum(c.completion_tokens or 0 for c in s.completions)
                for m, s in self.samples.items()
            },
        }


def sample_seed(seed: int | None, question_id: str, first_sample: int) -> int | None:
    """A per-question, per-sample-offset seed, stable across runs and processes."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{question_id}:{first_sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def sample_stream(
    member: Member, task: Task, question: Question, samples: Sequence[int]
) -> AsyncGenerator[Batch, None]:
    """Ask one model for the samples numbered ``samples``, in batches as they finish.

    One request for ``len(samples)`` completions, seeded by the first sample's
    number; each batch names the samples by their numbers in ``samples``.
    """
    request = GenerationRequest(
        messages=task.messages(question),
        n=len(samples),
        temperature=member.temperature,
        max_tokens=member.max_tokens,
        seed=sample_seed(member.seed, question.id, samples[0]),
    )

    async def numbered() -> AsyncGenerator[Batch, None]:
        async for batch in member.backend.stream(request):
            yield [(samples[index], completion) for index, completion in batch]

    return numbered()


async def sample_model(member: Member, task: Task, question: Question, *, n: int) -> ModelSamples:
    """Ask one model for ``n`` samples; a failure is reported, not raised."""
    responses = 0

    async def counted() -> AsyncGenerator[Batch, None]:
        nonlocal responses
        async for batch in sample_stream(member, task, question, range(n)):
            responses += 1
            yield batch

    try:
        completions = await gather_stream(counted(), n)
    except SlmMuxError as error:
        return ModelSamples(member.name, [], [None] * n, error=str(error), responses=responses)
    answers = [task.extract(c.text) for c in completions]
    return ModelSamples(member.name, completions, answers, responses=responses)


async def sample_pool(
    members: Sequence[Member], task: Task, question: Question
) -> list[ModelSamples]:
    """Every member's ``k`` samples, all models at once; raises when every model failed."""
    results = await asyncio.gather(*(sample_model(m, task, question, n=m.k) for m in members))
    if all(r.error for r in results):
        reasons = "; ".join(f"{r.model}: {r.error}" for r in results)
        raise BackendError(f"every model failed; {reasons}")
    return list(results)


_T = TypeVar("_T")


def grading_is_cheap(task: Task) -> bool:
    """Whether ``task`` tells equal votes by their normal forms alone (microseconds).

    Tasks with their own :meth:`Task.equivalent` (math-verify) may take much longer.
    """
    return type(task).equivalent is Task.equivalent


async def off_loop_if_slow(task: Task, work: Callable[[], _T]) -> _T:
    """``work()``: on the event loop when ``task``'s grading is cheap, else in a thread."""
    return work() if grading_is_cheap(task) else await asyncio.to_thread(work)


def mux_decision(
    results: Sequence[ModelSamples],
    task: Task,
    validation_accuracy: Mapping[str, float],
    k: Mapping[str, int],
) -> Decision:
    """SLM-MUX over the models' samples (``k``: samples asked of each model)."""
    return decide(
        {r.model: r.answers for r in results},
        task.cluster,
        k=k,
        validation_accuracy=validation_accuracy,
    )


class Mux:
    """Several models answering as one through SLM-MUX.

    ``validation_accuracy`` breaks confidence ties (higher wins); without it
    ties go to the order of ``members``.
    """

    def __init__(
        self,
        members: Sequence[Member],
        *,
        task: Task | str = "exact",
        validation_accuracy: Mapping[str, float] | None = None,
    ) -> None:
        if not members:
            raise InputError("a mux needs at least one model")
        names = [m.name for m in members]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise InputError(f"model {duplicate!r} appears twice in the mux")
        self.members = list(members)
        self.task = get_task(task) if isinstance(task, str) else task
        self.validation_accuracy = dict(validation_accuracy or {})
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_pool(
        cls,
        pool: str | Path,
        *,
        task: Task | str = "exact",
        k: int | None = None,
        models: Sequence[str] | None = None,
        validation_accuracy: Mapping[str, float] | None = None,
    ) -> Mux:
        """A mux over the models of a pool file (all, or those named in ``models``)."""
        from slm_mux.pool import load_pool, members_of

        loaded = load_pool(pool)
        members = members_of(loaded, k=k, models=models)
        accuracy = {
            m.name: m.validation_accuracy
            for m in loaded.models
            if m.validation_accuracy is not None
        }
        accuracy.update(validation_accuracy or {})
        return cls(members, task=task, validation_accuracy=accuracy)

    async def aask(self, question: str | Question) -> MuxAnswer:
        """Ask every model concurrently and pick the answer with SLM-MUX."""
        item = question if isinstance(question, Question) else Question("ask", question, "")
        start = time.perf_counter()
        results = await sample_pool(self.members, self.task, item)
        elapsed = time.perf_counter() - start
        k = {m.name: m.k for m in self.members}
        decision = await off_loop_if_slow(
            self.task, lambda: mux_decision(results, self.task, self.validation_accuracy, k)
        )
        return MuxAnswer(
            question=item.text,
            answer=decision.answer,
            model=decision.model,
            confidence=decision.confidence,
            votes=decision.votes,
            samples={r.model: r for r in results},
            latency_s=elapsed,
        )

    def ask(self, question: str | Question) -> MuxAnswer:
        """Synchronous :meth:`aask`.

        Runs on a private event loop kept until :meth:`close`, so loaded models
        and open connections serve every call. Inside a running event loop,
        use :meth:`aask`.
        """
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self.aask(question))

    async def aclose(self) -> None:
        """Release the backends' connections and models (async code)."""
        await close_members(self.members)

    def close(self) -> None:
        """Release what the synchronous :meth:`ask` opened."""
        if self._loop is not None:
            self._loop.run_until_complete(self.aclose())
            self._loop.close()
            self._loop = None

    def __enter__(self) -> Mux:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
