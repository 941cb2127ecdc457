"""Live SLM-MUX: every model samples k answers at once, the selection rule decides.

Models never see each other's answers. All models are asked concurrently and
each asks for its k samples in one request where the backend allows it, so
the wall time of a question is about that of the slowest model's single
generation, not k sequential calls.

With an adaptive :class:`~slm_mux.adaptive.Policy` the samples are drawn in
rounds (:func:`sample_rounds`): round 1 is one request per model, later rounds
ask only the models the policy names, continuing each model's sample numbers
(so its seeds). Fewer samples, more sequential requests: cost for latency.
The ``full`` policy is one round of ``k`` per model, as above.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from slm_mux.adaptive import Policy
from slm_mux.backends.base import Batch, Completion
from slm_mux.errors import BackendError, InputError, SlmMuxError
from slm_mux.members import Member, close_members
from slm_mux.selection import NO_VOTE, Decision, decide, encode, tie_break_rank
from slm_mux.tasks import Question, Task, get_task

if TYPE_CHECKING:
    from slm_mux.pool import Pool


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
    policy: str = "full"
    rounds: int = 1
    samples_drawn: int = 0
    samples_full: int = 0
    tokens_saved: int | None = None
    """An estimate: mean completion tokens per drawn sample times samples not drawn."""

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
            "adaptive": self.policy,
            "rounds": self.rounds,
            "samples": {"drawn": self.samples_drawn, "full": self.samples_full},
            "tokens_saved_estimate": self.tokens_saved,
        }


def sample_seed(seed: int | None, question_id: str, first_sample: int) -> int | None:
    """The seed of a request whose samples start at number ``first_sample``.

    It is a per-question base (31 bits of SHA-256, stable across runs and
    processes) plus ``first_sample``. Backends give the ``j``-th sample of a
    request seeded ``s`` the seed ``s + j`` where they can, so sample ``i`` of
    a question has seed ``base + i`` however the samples are split into
    requests (one request of ``k``, or several rounds of adaptive sampling).
    """
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
    return (int.from_bytes(digest[:4], "big") >> 1) + first_sample


def sample_stream(
    member: Member, task: Task, question: Question, samples: Sequence[int]
) -> AsyncGenerator[Batch, None]:
    """Ask one model for the samples numbered ``samples``, in batches as they finish.

    One request for ``len(samples)`` completions, seeded by the first sample's
    number; each batch names the samples by their numbers in ``samples``.
    """
    request = member.request(
        task.messages(question), len(samples), sample_seed(member.seed, question.id, samples[0])
    )

    async def numbered() -> AsyncGenerator[Batch, None]:
        async for batch in member.backend.stream(request):
            yield [(samples[index], completion) for index, completion in batch]

    return numbered()


async def sample_model(
    member: Member, task: Task, question: Question, numbers: Sequence[int]
) -> ModelSamples:
    """Ask one model for the samples numbered ``numbers`` (in that order, one request);
    a failure is reported, not raised."""
    responses = 0
    found: dict[int, Completion] = {}
    try:
        async for batch in sample_stream(member, task, question, numbers):
            responses += 1
            found.update(batch)
    except SlmMuxError as error:
        return ModelSamples(
            member.name, [], [None] * len(numbers), error=str(error), responses=responses
        )
    completions = [found[number] for number in numbers]
    answers = [task.extract(c.text) for c in completions]
    return ModelSamples(member.name, completions, answers, responses=responses)


Draw = Callable[[Member, Sequence[int]], Awaitable[ModelSamples]]
"""Draws one model's samples numbered as given; a failure is reported in ``error``."""


@dataclass(frozen=True)
class Sampled:
    """Every model's samples of one question as a policy drew them, in model order.

    A failed model's ``answers`` are ``k`` times ``None`` (no vote) and its
    ``completions`` what it returned before it failed.
    """

    results: list[ModelSamples]
    policy: Policy
    rounds: int
    full: int
    """Samples full SLM-MUX draws: the members' ``k`` summed."""

    @property
    def drawn(self) -> int:
        """Samples received (in this run)."""
        return sum(len(r.completions) for r in self.results)

    @property
    def tokens_saved(self) -> int | None:
        """An estimate of the completion tokens not spent: mean tokens per drawn sample
        times samples not drawn (``None`` when the backends report no tokens)."""
        tokens = [c.completion_tokens for r in self.results for c in r.completions]
        if not tokens or any(t is None for t in tokens):
            return None
        return round(sum(t or 0 for t in tokens) / len(tokens) * max(self.full - self.drawn, 0))


def drawn_codes(answers: Sequence[Sequence[str | None]], task: Task) -> list[list[int]]:
    """Each model's answer codes (:func:`~slm_mux.selection.encode`), in drawing order."""
    table, _ = encode(answers, task.cluster)
    return [[int(code) for code in table[m, : len(row)]] for m, row in enumerate(answers)]


async def sample_rounds(
    members: Sequence[Member],
    task: Task,
    question: Question,
    *,
    policy: Policy,
    validation_accuracy: Mapping[str, float],
    draw: Draw | None = None,
    drawn: Mapping[str, Sequence[str | None]] | None = None,
) -> Sampled:
    """Draw ``question``'s samples in the rounds ``policy`` asks for, all models at once.

    Each round every model the policy names gets one ``draw`` (default:
    :func:`sample_model`) of the next sample numbers. ``drawn`` gives answers
    already in hand per model (samples ``0..``), replayed before anything is
    drawn. A failed model counts as ``k`` samples without a vote. Raises
    ``BackendError`` when every model failed.
    """

    async def ask(member: Member, numbers: Sequence[int]) -> ModelSamples:
        return await sample_model(member, task, question, numbers)

    draw = draw or ask
    k = [m.k for m in members]
    rank = [int(r) for r in tie_break_rank([validation_accuracy.get(m.name) for m in members])]
    state = [ModelSamples(m.name, [], list((drawn or {}).get(m.name, ()))[: m.k]) for m in members]
    rounds = 0
    while True:
        if all(len(s.answers) >= size for s, size in zip(state, k, strict=True)):
            break  # every sample drawn (or failed): no policy asks for more; skip the grading
        codes = await off_loop_if_slow(task, partial(drawn_codes, [s.answers for s in state], task))
        for i, (s, size) in enumerate(zip(state, k, strict=True)):
            if s.error is not None:
                codes[i] = [NO_VOTE] * size
        more = policy.next_round(codes, k, rank)
        if not any(more):
            break
        rounds += 1
        asked = [
            (m, range(len(state[i].answers), len(state[i].answers) + n))
            for i, (m, n) in enumerate(zip(members, more, strict=True))
            if n
        ]
        got = await asyncio.gather(*(draw(m, numbers) for m, numbers in asked))
        by_name = {r.model: r for r in got}
        state = [_merged(s, by_name.get(s.model), m.k) for s, m in zip(state, members, strict=True)]
    if all(s.error for s in state):
        reasons = "; ".join(f"{s.model}: {s.error}" for s in state)
        raise BackendError(f"every model failed; {reasons}")
    return Sampled(state, policy, rounds, full=sum(k))


def _merged(before: ModelSamples, new: ModelSamples | None, k: int) -> ModelSamples:
    """A model's samples after a round (a failure: ``k`` answers without a vote)."""
    if new is None:
        return before
    completions = [*before.completions, *new.completions]
    responses = before.responses + new.responses
    if new.error is not None:
        return ModelSamples(before.model, completions, [None] * k, new.error, responses)
    return ModelSamples(before.model, completions, [*before.answers, *new.answers], None, responses)


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
    ties go to the order of ``members``. ``adaptive`` is the sampling policy
    (:class:`~slm_mux.adaptive.Policy` or its name; default ``full``).
    """

    def __init__(
        self,
        members: Sequence[Member],
        *,
        task: Task | str = "exact",
        validation_accuracy: Mapping[str, float] | None = None,
        adaptive: Policy | str = "full",
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
        self.policy = adaptive if isinstance(adaptive, Policy) else Policy.parse(adaptive)
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_pool(
        cls,
        pool: str | Path | Pool,
        *,
        task: Task | str = "exact",
        k: int | None = None,
        models: Sequence[str] | None = None,
        validation_accuracy: Mapping[str, float] | None = None,
        adaptive: Policy | str | None = None,
    ) -> Mux:
        """A mux over the models of a pool file, or of a pool already loaded (all, or
        those named in ``models``); ``adaptive`` overrides the pool's ``defaults.adaptive``."""
        from slm_mux.pool import Pool, load_pool, members_of

        loaded = pool if isinstance(pool, Pool) else load_pool(pool)
        members = members_of(loaded, k=k, models=models)
        accuracy = loaded.validation_accuracy
        accuracy.update(validation_accuracy or {})
        policy = loaded.defaults.adaptive if adaptive is None else adaptive
        return cls(members, task=task, validation_accuracy=accuracy, adaptive=policy)

    async def aask(self, question: str | Question) -> MuxAnswer:
        """Ask every model concurrently (in the policy's rounds) and pick the answer
        with SLM-MUX."""
        item = question if isinstance(question, Question) else Question("ask", question, "")
        start = time.perf_counter()
        sampled = await sample_rounds(
            self.members,
            self.task,
            item,
            policy=self.policy,
            validation_accuracy=self.validation_accuracy,
        )
        elapsed = time.perf_counter() - start
        results = sampled.results
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
            policy=str(sampled.policy),
            rounds=sampled.rounds,
            samples_drawn=sampled.drawn,
            samples_full=sampled.full,
            tokens_saved=sampled.tokens_saved,
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
