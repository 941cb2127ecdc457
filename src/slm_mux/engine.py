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
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_mux.backends.base import Batch, Completion, GenerationRequest, gather_stream
from slm_mux.errors import BackendError, InputError, SlmMuxError
from slm_mux.members import Member, close_members
from slm_mux.selection import decide
from slm_mux.tasks import Question, Task, get_task


@dataclass(frozen=True)
class ModelSamples:
    """What one model returned for one question; ``error`` when it failed."""

    model: str
    completions: list[Completion]
    answers: list[str | None]
    error: str | None = None


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
    try:
        completions = await gather_stream(sample_stream(member, task, question, range(n)), n)
    except SlmMuxError as error:
        return ModelSamples(member.name, [], [None] * n, error=str(error))
    answers = [task.extract(c.text) for c in completions]
    return ModelSamples(member.name, completions, answers)


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
        results = await asyncio.gather(
            *(sample_model(m, self.task, item, n=m.k) for m in self.members)
        )
        elapsed = time.perf_counter() - start
        if all(r.error for r in results):
            first = results[0]
            raise BackendError(f"every model failed; {first.model}: {first.error}")
        # Grading may be slow (math-verify), so it stays off the event loop.
        decision = await asyncio.to_thread(
            decide,
            {r.model: r.answers for r in results},
            self.task.cluster,
            k={m.name: m.k for m in self.members},
            validation_accuracy=self.validation_accuracy,
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
