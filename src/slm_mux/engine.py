"""The one live-answer path: :func:`run` answers a question with a registered method.

Every caller of a method goes through here: :class:`Mux` (the library's SLM-MUX),
:func:`slm_mux.live.answer` (``serve``) and ``compare``; they differ only in their
:class:`~slm_mux.calls.Caller` (sent live, or replayed and recorded) and all get an
:class:`Answer`.

A vote over samples (SLM-MUX and its baselines) draws them with :func:`sample_rounds`:
models never see each other's answers, all models are asked concurrently and each asks
for its k samples in one request where the backend allows it, so the wall time of a
question is about that of the slowest model's single generation, not k sequential calls.
With an adaptive :class:`~slm_mux.adaptive.Policy` the samples are drawn in rounds:
round 1 is one request per model, later rounds ask only the models the policy names,
continuing each model's sample numbers (so its seeds). Fewer samples, more sequential
requests: cost for latency. The ``full`` policy is one round of ``k`` per model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from slm_mux.adaptive import Policy
from slm_mux.backends.base import Batch, Completion
from slm_mux.calls import Caller, LiveCaller, sample_seed
from slm_mux.errors import BackendError, InputError, SlmMuxError
from slm_mux.members import Member, close_members
from slm_mux.methods import MethodOutcome, Settings
from slm_mux.methods.registry import Ballot, MethodSpec, Vote, get_method
from slm_mux.selection import NO_VOTE, encode, tie_break_rank
from slm_mux.tasks import Question, Task, get_task
from slm_mux.tasks.base import empty_question

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
    retryable: bool = True
    """Whether running again may fix ``error`` (see :class:`~slm_mux.errors.BackendError`)."""


def sample_stream(
    member: Member, task: Task, question: Question, samples: Sequence[int]
) -> AsyncGenerator[Batch, None]:
    """Ask one model for the samples numbered ``samples``, in batches as they finish.

    One request per run of consecutive numbers, for that run's completions, seeded
    by its first number: the sample numbered *i* always has the seed of *i*, so the
    samples left after an interruption (say 0 and 2, with 1 stored) are the ones an
    uninterrupted run draws. Each batch names the samples by their numbers. Requests
    are patient (:attr:`~slm_mux.backends.base.GenerationRequest.patient`): this is
    how a collection draws, and it wants every sample more than a quick answer.
    """
    runs: list[list[int]] = []
    for number in samples:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    messages = task.messages(question)

    async def numbered() -> AsyncGenerator[Batch, None]:
        for run in runs:
            request = member.request(
                messages, len(run), sample_seed(member.seed, question.id, run[0])
            )
            async for batch in member.backend.stream(replace(request, patient=True)):
                yield [(run[index], completion) for index, completion in batch]

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
            member.name,
            [],
            [None] * len(numbers),
            error=str(error),
            responses=responses,
            retryable=getattr(error, "retryable", True),
        )
    completions = [found[number] for number in numbers]
    answers = [task.answer(question, c.text) for c in completions]
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
        retryable = any(s.retryable for s in state)
        raise BackendError(f"every model failed; {reasons}", retryable=retryable)
    return Sampled(state, policy, rounds, full=sum(k))


def _merged(before: ModelSamples, new: ModelSamples | None, k: int) -> ModelSamples:
    """A model's samples after a round (a failure: ``k`` answers without a vote)."""
    if new is None:
        return before
    completions = [*before.completions, *new.completions]
    responses = before.responses + new.responses
    if new.error is not None:
        return ModelSamples(
            before.model, completions, [None] * k, new.error, responses, new.retryable
        )
    return ModelSamples(before.model, completions, [*before.answers, *new.answers], None, responses)


_T = TypeVar("_T")


async def off_loop_if_slow(task: Task, work: Callable[[], _T]) -> _T:
    """``work()``: on the event loop when ``task``'s grading is cheap
    (:attr:`~slm_mux.tasks.Task.exact_equivalence`), else in a thread."""
    return work() if task.exact_equivalence else await asyncio.to_thread(work)


ROLES = ("aggregator", "generator")
"""Settings fields naming a pool model; ``None`` resolves to the best validation model."""

FULL = Policy("full")


def best_model(members: Sequence[Member], accuracy: Mapping[str, float]) -> str:
    """The model with the best validation accuracy; ties and unknown ones go to pool order."""
    ranks = tie_break_rank([accuracy.get(m.name) for m in members])
    return members[int(ranks.argmin())].name


def resolve_roles(settings: Settings, best: str) -> Settings:
    """``settings`` with every unset role (aggregator, generator) given to ``best``."""
    unset = {role: best for role in ROLES if getattr(settings, role, best) is None}
    return replace(settings, **unset)


@dataclass(frozen=True)
class Answer:
    """One method's answer to one question, however it was asked (:func:`run`).

    ``answer`` is the extracted final answer; ``text`` the full text of a reply that gave
    it (``""``: none, or not looked for); ``model`` SLM-MUX's winner, else the model whose
    reply ``text`` is. ``confidence`` is SLM-MUX's only; ``votes`` (per model, answer ->
    count) only for the votes over samples. ``failed`` names the models whose calls failed
    after retries, with the first reason. Tokens are summed over every reply received, as
    the servers reported them; ``calls`` counts the responses received. ``texts`` holds
    every reply of a pass-through request (``n`` of them), else just ``text``.

    For the votes over samples, ``samples`` holds each model's samples, and ``policy``'s
    ``rounds`` of sampling drew ``samples_drawn`` of the ``samples_full`` that full
    sampling draws; ``tokens_saved`` estimates the completion tokens not spent (mean per
    drawn sample times samples not drawn; ``None``: unknown). A discussion method's
    ``outcome`` is the method's own result (first round, failures).
    """

    method: str
    question: str
    answer: str | None
    text: str
    model: str | None
    confidence: float | None
    votes: dict[str, dict[str, int]]
    failed: dict[str, str]
    prompt_tokens: int
    completion_tokens: int
    calls: int
    texts: tuple[str, ...] = ()
    samples: dict[str, ModelSamples] = field(default_factory=dict, repr=False)
    latency_s: float = field(default=0.0, compare=False)
    """Seconds from the first call to the decision (a measurement: not compared)."""
    policy: str | None = None
    rounds: int = 0
    samples_drawn: int = 0
    samples_full: int = 0
    tokens_saved: int | None = None
    outcome: MethodOutcome | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of a vote over samples (no response texts, no secrets)."""
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


MuxAnswer = Answer
"""The name :class:`Mux` answers went by; the same type."""


async def run(
    method: str,
    question: Question,
    task: Task,
    members: Sequence[Member],
    caller: Caller,
    *,
    policy: Policy = FULL,
    accuracy: Mapping[str, float] | None = None,
    settings: Settings | None = None,
    reply: bool = True,
) -> Answer:
    """Answer ``question`` with the registered ``method``, every call through ``caller``.

    A vote over samples draws them in ``policy``'s rounds (``full``: ``k`` per model at
    once); a discussion method runs with ``settings`` (default: its defaults; unset roles
    go to the best validation model). ``accuracy`` breaks confidence ties and names the
    best model. With ``reply`` the text of a reply giving the answer is looked for
    (``compare``, which grades answers only, skips it). Raises ``BackendError`` when every
    model of a vote failed.
    """
    spec = get_method(method)
    known = dict(accuracy or {})
    started = time.perf_counter()
    if spec.vote is not None:
        return await _voted(spec, question, task, members, caller, policy, known, reply, started)
    assert spec.run is not None  # a discussion method
    chosen = resolve_roles(settings or spec.settings(), best_model(members, known))
    outcome = await spec.run(question, task, [m.name for m in members], caller, chosen)
    failed: dict[str, str] = {}
    for failure in outcome.detail.get("failures", []):
        failed.setdefault(failure.get("model", ""), failure["error"])
    final = outcome.answer

    def source() -> tuple[str | None, str]:
        # mav's verdicts are no replies to the question: a verify/ step is skipped.
        for step, model, texts in reversed(caller.record):
            if step.startswith("verify/"):
                continue
            for text in reversed(texts or []):
                found = task.answer(question, text)
                if final is not None and found is not None and task.equivalent(found, final):
                    return model, text
        return None, ""

    model, text = await off_loop_if_slow(task, source) if reply else (None, "")
    return Answer(
        method=method,
        question=question.text,
        answer=final,
        text=text,
        model=model,
        confidence=None,
        votes={},
        failed=failed,
        prompt_tokens=caller.prompt_tokens,
        completion_tokens=caller.completion_tokens,
        calls=sum(caller.responses.values()),
        texts=(text,),
        latency_s=time.perf_counter() - started,
        outcome=outcome,
    )


async def _voted(
    spec: MethodSpec,
    question: Question,
    task: Task,
    members: Sequence[Member],
    caller: Caller,
    policy: Policy,
    accuracy: Mapping[str, float],
    reply: bool,
    started: float,
) -> Answer:
    """A vote over independent samples drawn through ``caller`` in ``policy``'s rounds."""
    messages = task.messages(question)

    async def draw(member: Member, numbers: Sequence[int]) -> ModelSamples:
        before = caller.responses[member.name]
        try:
            sent = await caller.samples(member, messages, range(numbers[0], numbers[-1] + 1))
        except (BackendError, InputError) as error:
            responses = caller.responses[member.name] - before
            retryable = getattr(error, "retryable", True)
            return ModelSamples(
                member.name, [], [None] * len(numbers), str(error), responses, retryable
            )
        answers = [task.answer(question, c.text) for c in sent.completions]
        return ModelSamples(member.name, sent.completions, answers, responses=sent.responses)

    sampled = await sample_rounds(
        members, task, question, policy=policy, validation_accuracy=accuracy, draw=draw
    )
    results = sampled.results
    ballot = Ballot(
        answers={r.model: r.answers for r in results},
        task=task,
        k={m.name: m.k for m in members},
        accuracy=accuracy,
        best=best_model(members, accuracy),
    )
    mux_rule = get_method("slm-mux").vote
    assert spec.vote is not None and mux_rule is not None

    def choose() -> tuple[Vote, Vote]:
        mux = mux_rule(ballot)
        return mux, mux if spec.name == "slm-mux" else spec.vote(ballot)  # type: ignore[misc]

    mux, chosen = await off_loop_if_slow(task, choose)
    final, winner = chosen.answer, mux.model if spec.name == "slm-mux" else None
    model, text = winner, ""
    if reply and final is not None:
        candidates = [r for r in results if r.model == winner] if winner is not None else results
        model, text = next(
            (
                (r.model, c.text)
                for r in candidates
                for c, found in zip(r.completions, r.answers, strict=False)
                if found == final
            ),
            (winner, ""),
        )
    return Answer(
        method=spec.name,
        question=question.text,
        answer=final,
        text=text,
        model=model,
        confidence=mux.confidence if spec.name == "slm-mux" else None,
        votes=mux.votes,
        failed={r.model: r.error for r in results if r.error is not None},
        prompt_tokens=caller.prompt_tokens,
        completion_tokens=caller.completion_tokens,
        calls=sum(r.responses for r in results),
        texts=(text,),
        samples={r.model: r for r in results},
        latency_s=time.perf_counter() - started,
        policy=str(policy),
        rounds=sampled.rounds,
        samples_drawn=sampled.drawn,
        samples_full=sampled.full,
        tokens_saved=sampled.tokens_saved,
    )


class Mux:
    """Several models answering as one through SLM-MUX (:func:`run`).

    Use it as a context manager (``with`` around :meth:`ask`, ``async with`` around
    :meth:`aask`): leaving it releases the backends' connections and loaded models.

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
        self._opened = False
        self._closing: asyncio.Task[None] | None = None

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

    async def aask(self, question: str | Question) -> Answer:
        """Ask every model concurrently (in the policy's rounds) and pick the answer
        with SLM-MUX (:func:`run` through a :class:`~slm_mux.calls.LiveCaller`).
        A question without a non-blank character is an :class:`InputError`, as in
        ``ask`` and ``serve``."""
        item = question if isinstance(question, Question) else Question("ask", question, "")
        problem = empty_question(item.text)
        if problem is not None:
            raise InputError(problem)
        self._opened = True
        caller = LiveCaller({m.name: m for m in self.members}, item, "slm-mux")
        return await run(
            "slm-mux",
            item,
            self.task,
            self.members,
            caller,
            policy=self.policy,
            accuracy=self.validation_accuracy,
        )

    def ask(self, question: str | Question) -> Answer:
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
        self._opened = False
        await close_members(self.members)

    def close(self) -> None:
        """Release what :meth:`ask` or :meth:`aask` opened.

        Inside a running event loop the release is scheduled on that loop (prefer
        ``async with`` or :meth:`aclose` there).
        """
        if self._loop is not None:
            self._loop.run_until_complete(self.aclose())
            self._loop.close()
            self._loop = None
        elif self._opened:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(self.aclose())
            else:
                self._closing = running.create_task(self.aclose())

    def __enter__(self) -> Mux:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Mux:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
