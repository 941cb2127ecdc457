"""The live comparison: SLM-MUX beside debate, moa and mav on the same pool, questions, store.

Every model call goes through a :class:`RecordingCaller`, keyed by (method, config
hash, task, split, question, step, model). A call already in the store's ``calls``
table is replayed from it, sending nothing; any other is sent through the model's
backend and committed at once with its prompt, replies, reported tokens, latency and
the number of responses it took. So a killed run resumes without repeating a finished
call, a finished comparison re-runs without a single request and prints the same table,
and every transcript can be audited afterwards. The config hash covers the method, its
settings (roles resolved) and every member's generation settings, so changed options
never mix transcripts.

A run has phases: first the independent samples (``k`` per model per question, one
call each), shared by the votes over samples (``slm-mux``, ``agent-forest``, ``sc``,
``first-sample``, ``oracle``: :func:`slm_mux.methods.shared_methods`); then each
selected discussion method through :func:`slm_mux.engine.run`. Within a phase all questions run at
once (the backends bound their own concurrency); within a question the method's own
calls of a round go out together. With an adaptive policy (``--adaptive``, not ``full``)
a last phase ``slm-mux@POLICY`` draws SLM-MUX's samples live in the policy's rounds, one
recorded call per model and round.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_mux.adaptive import Policy
from slm_mux.backends.base import Completion
from slm_mux.calls import Caller, Sent, seed_key
from slm_mux.collect import collect_splits, has_validation, tie_break_accuracy
from slm_mux.comparison import (
    SHARED,
    Comparison,
    Groupthink,
    MethodResult,
    failure_counts,
    verdict_counts,
)
from slm_mux.engine import FULL, ROLES, best_model, resolve_roles, run
from slm_mux.errors import BackendError, InputError, StoreError
from slm_mux.members import Member, close_members, warm_members
from slm_mux.methods import (
    Ballot,
    Call,
    MethodOutcome,
    Settings,
    call_all,
    discussion_methods,
    first_round_majority,
    get_method,
    shared_methods,
)
from slm_mux.pool import Pool, members_of
from slm_mux.progress import SILENT, Progress
from slm_mux.reply_health import ReplyHealth
from slm_mux.sample import Split
from slm_mux.store import RecordedCall, RunKey, Store
from slm_mux.tasks import Question, Task
from slm_mux.tasks.base import Message
from slm_mux.tasks.loading import QuestionSet


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _member_identity(member: Member) -> str:
    """What makes a member's replies: its settings hash (or, without one, its settings)."""
    if member.settings_hash is not None:
        return member.settings_hash
    top_p = "" if member.top_p == 1 else f":{member.top_p}"
    return f"{member.temperature}:{member.max_tokens}:{member.seed}{top_p}"


def config_hash(method: str, settings: Mapping[str, Any], members: Sequence[Member]) -> str:
    """The hash that keys a method's recorded calls: method, settings, members in pool order
    (the shared independent samples also by each member's ``k``)."""
    identity = [
        [m.name, _member_identity(m), *([m.k] if method == SHARED else [])] for m in members
    ]
    return _digest({"method": method, "settings": dict(settings), "members": identity})


def questions_hash(questions: Sequence[Question]) -> str:
    """The hash of a question set: its sorted question ids."""
    return _digest(sorted(q.id for q in questions))


@dataclass
class _Phase:
    """One method configuration's recorded calls, and what this run sent through it."""

    method: str
    config_hash: str
    task: Task
    split: Split
    store: Store
    members: dict[str, Member]
    recorded: dict[tuple[str, str, str], RecordedCall]
    sent: int = 0

    def totals(self, used: Sequence[tuple[str, str, str]]) -> tuple[int, int, int]:
        """Requests, prompt and completion tokens of the recorded calls ``used``."""
        calls = [self.recorded[key] for key in used]
        return (
            sum(c.requests for c in calls),
            sum(c.prompt_tokens or 0 for c in calls),
            sum(c.completion_tokens or 0 for c in calls),
        )


class RecordingCaller(Caller):
    """The :class:`~slm_mux.calls.Caller` of one method on one question of a phase:
    each call is replayed from the store, else sent through the member's backend and
    stored at once.

    ``used`` lists the keys of the calls it made (replayed or sent), in order.
    Independent samples (:meth:`~slm_mux.calls.Caller.samples`) are seeded as the
    shared phase's samples of the same numbers.
    """

    def __init__(self, phase: _Phase, question: Question) -> None:
        super().__init__(phase.members, question, phase.method)
        self.phase = phase
        self.used: list[tuple[str, str, str]] = []

    def sample_key(self, model: str) -> str:
        """The shared phase's key (its step ``sample``), whichever phase draws."""
        return seed_key(self.question.id, SHARED, "sample", model)

    async def send(
        self, member: Member, step: str, messages: list[Message], n: int, seed: int | None
    ) -> Sent:
        """The replies from the store, else from the member's backend (then stored)."""
        phase, question = self.phase, self.question
        key = (question.id, step, member.name)
        stored = phase.recorded.get(key)
        if stored is not None:
            if (stored.messages, stored.n) != (messages, n):
                raise StoreError(
                    f"{phase.store.path}: method {phase.method!r}, question {question.id!r}, "
                    f"step {step!r}, model {member.name!r}: the stored call had another "
                    "prompt; use another --store"
                )
            self.used.append(key)
            return Sent([Completion(text, None, None, 0.0, None) for text in stored.replies], 0)
        started = time.perf_counter()
        sent = await self._through_backend(member, messages, n, seed)
        phase.sent += sent.responses
        call = RecordedCall(
            method=phase.method,
            config_hash=phase.config_hash,
            task=phase.task.name,
            split=phase.split,
            question_id=question.id,
            step=step,
            model=member.name,
            n=n,
            messages=messages,
            replies=sent.texts,
            prompt_tokens=sent.prompt_tokens,
            completion_tokens=sent.completion_tokens,
            latency_s=time.perf_counter() - started,
            requests=sent.responses,
        )
        await phase.store.write(lambda: phase.store.add_call(call))
        phase.recorded[key] = call
        self.used.append(key)
        return sent


Run = Callable[[Question, RecordingCaller], Awaitable[MethodOutcome]]
"""One method on one question, through the question's caller."""


@dataclass(frozen=True)
class _Done:
    """A phase's outcome per question (in question order), its callers and wall time."""

    outcomes: list[MethodOutcome]
    callers: list[RecordingCaller]
    wall_s: float


async def _run_phase(
    phase: _Phase, questions: Sequence[Question], run: Run, progress: Progress, key: RunKey
) -> _Done:
    """Run every question of a phase at once; a model's failure fails only its question.

    The phase's wall time is added to the store's record only when it sent requests.
    """
    row = progress.row(phase.method, total=len(questions))

    async def one(question: Question) -> tuple[MethodOutcome, RecordingCaller]:
        caller = RecordingCaller(phase, question)
        try:
            outcome = await run(question, caller)
        except BackendError as error:
            failure = {"error": str(error), "retryable": error.retryable}
            outcome = MethodOutcome(None, detail={"failures": [failure]})
        row.advance(1, errors=int(bool(outcome.detail.get("failures"))))
        return outcome, caller

    started = time.perf_counter()
    running = [asyncio.ensure_future(one(question)) for question in questions]
    try:
        done = await asyncio.gather(*running)
    except BaseException:
        # A store conflict ends the run: stop every other question first.
        for pending in running:
            pending.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    elapsed = time.perf_counter() - started
    wall = await phase.store.write(
        lambda: phase.store.add_method_wall(key, elapsed if phase.sent else 0.0)
    )
    return _Done([outcome for outcome, _ in done], [caller for _, caller in done], wall)


def _sampler(task: Task, members: Sequence[Member], health: ReplyHealth) -> Run:
    """The shared independent sampling: ``k`` samples per model, one call each (counted
    in ``health``)."""

    async def sample(question: Question, caller: RecordingCaller) -> MethodOutcome:
        calls = [Call(m.name, "sample", task.messages(question), n=m.k) for m in members]
        replies, failures = await call_all(caller, calls)
        answers = {
            member.name: [task.answer(question, text) for text in texts]
            for member, texts in zip(members, replies, strict=True)
            if texts is not None
        }
        health.add_many({m.name: t for m, t in zip(members, replies, strict=True) if t}, answers)
        return MethodOutcome(None, detail={"answers": answers, "failures": failures})

    return sample


def _runner(
    method: str,
    task: Task,
    members: Sequence[Member],
    accuracy: Mapping[str, float],
    *,
    settings: Settings | None = None,
    policy: Policy | None = None,
) -> Run:
    """``method`` through :func:`slm_mux.engine.run` (no reply text: only answers are graded);
    a vote over samples reports its rounds, samples drawn and failed models."""

    async def one(question: Question, caller: RecordingCaller) -> MethodOutcome:
        found = await run(
            method,
            question,
            task,
            members,
            caller,
            policy=policy or FULL,
            accuracy=accuracy,
            settings=settings,
            reply=False,
        )
        if found.outcome is not None:
            return found.outcome
        failures = [
            {"model": r.model, "error": r.error, "retryable": r.retryable}
            for r in found.samples.values()
            if r.error
        ]
        detail = {"rounds": found.rounds, "samples": found.samples_drawn, "failures": failures}
        return MethodOutcome(found.answer, detail=detail)

    return one


def _groupthink(
    outcomes: Sequence[MethodOutcome],
    correct: Sequence[bool],
    task: Task,
    questions: Sequence[Question],
) -> Groupthink | None:
    """The groupthink counts of a method that reports its first round (debate, moa)."""
    if any(outcome.first_round is None for outcome in outcomes):
        return None
    lost = gained = present_lost = 0
    for outcome, right, question in zip(outcomes, correct, questions, strict=True):
        first = outcome.first_round or {}
        majority_right = task.grade(first_round_majority(first, task), question.reference)
        present = any(
            task.grade(answer, question.reference) for found in first.values() for answer in found
        )
        lost += majority_right and not right
        gained += right and not majority_right
        present_lost += present and not right
    return Groupthink(lost, gained, present_lost)


def _votes_correct(
    method: str,
    outcomes: Sequence[MethodOutcome],
    questions: Sequence[Question],
    task: Task,
    k: Mapping[str, int],
    accuracy: Mapping[str, float],
    best: str,
) -> list[bool]:
    """Whether the registered vote ``method`` over each question's shared samples is right."""
    rule = get_method(method).vote
    assert rule is not None  # a vote over samples
    return [
        rule(Ballot(o.detail["answers"], task, k, accuracy, best, q.reference)).score(
            task, q.reference
        )
        == 1
        for o, q in zip(outcomes, questions, strict=True)
    ]


async def compare(
    members: Sequence[Member],
    task: Task,
    questions: Sequence[Question],
    *,
    store: Store,
    methods: Sequence[str],
    settings: Mapping[str, Settings],
    split: Split = "test",
    validation_accuracy: Mapping[str, float] | None = None,
    progress: Progress = SILENT,
    adaptive: Policy | None = None,
) -> Comparison:
    """Run ``methods`` on ``questions`` with recorded calls; their results, also stored.

    ``settings`` gives the discussion methods' options (default: each one's defaults);
    ``validation_accuracy`` breaks SLM-MUX's confidence ties and picks the best model
    (``sc``, ``first-sample``, the default moa aggregator and mav generator), else pool
    order. With an ``adaptive`` policy other than ``full`` and ``slm-mux`` among
    ``methods``, a row ``slm-mux@POLICY`` follows ``slm-mux``: SLM-MUX with its samples
    drawn live in the policy's rounds (recorded calls of their own; sample ``i`` seeded as
    the shared sample ``i``, so ``exact`` decides as ``slm-mux`` where the backend keeps
    seeds). Each phase is reported to ``progress``.

    One function of about 90 lines: its phases share the closures ``phase`` and ``result``
    over one run's store, question set and question hash.
    """
    accuracy = dict(validation_accuracy or {})
    best = best_model(members, accuracy)
    by_name = {m.name: m for m in members}
    k = {m.name: m.k for m in members}
    qhash = questions_hash(questions)
    texts = [(q.id, q.text, q.reference) for q in questions]
    await store.write(lambda: store.add_questions(task.name, split, texts))
    results: dict[str, MethodResult] = {}
    shared = [m for m in methods if m in shared_methods()]

    def phase(method: str, options: Mapping[str, Any]) -> tuple[_Phase, RunKey]:
        digest = config_hash(method, options, members)
        recorded = store.calls(method, digest, task.name, split)
        made = _Phase(method, digest, task, split, store, by_name, recorded)
        return made, (method, digest, task.name, split, qhash)

    async def result(
        method: str, made: _Phase, done: _Done, correct: list[bool], **extra: Any
    ) -> None:
        calls, prompt, completion = made.totals([k for c in done.callers for k in c.used])
        found = MethodResult(
            method,
            questions=len(questions),
            correct=sum(correct),
            calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            wall_s=round(done.wall_s, 3),  # as stored: the report shows the same figure
            failed=sum(bool(o.detail.get("failures")) for o in done.outcomes),
            failures=failure_counts(o.detail.get("failures", []) for o in done.outcomes),
            verdicts=verdict_counts(o.detail for o in done.outcomes),
            **extra,
        )
        results[method] = found
        key = (method, made.config_hash, task.name, split, qhash)
        await store.write(lambda: store.save_method_result(key, found.to_json()))

    def graded(done: _Done) -> list[bool]:
        return [
            task.grade(o.answer, q.reference) for o, q in zip(done.outcomes, questions, strict=True)
        ]

    n = len(questions)
    if shared:
        with progress.phase(f"compare: independent samples, {n} questions"):
            made, key = phase(SHARED, {})
            health = ReplyHealth()
            done = await _run_phase(made, questions, _sampler(task, members, health), progress, key)
            health.warn()
        for method in shared:
            correct = _votes_correct(method, done.outcomes, questions, task, k, accuracy, best)
            model = best if get_method(method).model_column else None
            await result(method, made, done, correct, model=model, shared=SHARED)
    discussions = discussion_methods()
    for method in (m for m in methods if m in discussions):
        chosen = resolve_roles(settings.get(method) or discussions[method].settings(), best)
        with progress.phase(f"compare: {method}, {n} questions"):
            made, key = phase(method, chosen.to_json())
            runner = _runner(method, task, members, accuracy, settings=chosen)
            done = await _run_phase(made, questions, runner, progress, key)
        correct = graded(done)
        groupthink = _groupthink(done.outcomes, correct, task, questions)
        await result(method, made, done, correct, groupthink=groupthink)
    if adaptive is not None and adaptive.kind != "full" and "slm-mux" in methods:
        name = f"slm-mux@{adaptive}"
        with progress.phase(f"compare: {name}, {n} questions"):
            made, key = phase(name, {"k": k})
            runner = _runner("slm-mux", task, members, accuracy, policy=adaptive)
            done = await _run_phase(made, questions, runner, progress, key)
        await result(name, made, done, graded(done))
    order = [m for method in methods for m in (method, f"slm-mux@{adaptive}") if m in results]
    ordered = {method: results[method] for method in dict.fromkeys(order)}
    return Comparison(task.name, split, len(questions), ordered)


async def _tie_break_accuracy(
    store: Store,
    members: Sequence[Member],
    pool: Pool,
    task: Task,
    validation: Sequence[Question] | None,
    warn: Callable[[str], None],
    progress: Progress,
) -> dict[str, float]:
    """Validation accuracy per model: the pool file's, overridden by the store's validation
    split (collected first from ``validation`` when the store has none)."""
    accuracy = pool.validation_accuracy
    if not has_validation(store, task.name) and validation:
        plan: dict[Split, QuestionSet] = {"validation": QuestionSet({task.name: list(validation)})}
        reports = await collect_splits(members, plan, store=store, progress=progress)
        if not all(report.complete for report in reports):
            warn("some validation questions failed; tie-breaks use what was collected")
    if has_validation(store, task.name):
        accuracy = tie_break_accuracy(store, task.name, accuracy, warn)
    elif not accuracy:
        warn(
            f"{store.path}: no validation samples of task {task.name!r} (see --validation-data): "
            "confidence ties, sc, first-sample and the default roles go to pool order"
        )
    return accuracy


def compare_pool(
    pool: Pool,
    task: Task,
    questions: Sequence[Question],
    *,
    store: str | Path,
    methods: Sequence[str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    k: int | None = None,
    validation: Sequence[Question] | None = None,
    progress: Progress = SILENT,
    warn: Callable[[str], None] = lambda message: None,
    adaptive: Policy | None = None,
) -> Comparison:
    """Build the pool's backends once, compare ``methods`` on ``questions``, close them.

    ``options`` gives each discussion method's settings by field (``{"debate":
    {"rounds": 3}}``); every option and role is checked before a model is loaded. ``k``
    replaces every model's own ``k``; ``validation`` questions are collected first when
    the store has no validation samples of the task. In-process models are loaded before
    any phase is timed. ``adaptive`` (default: the pool's ``defaults.adaptive``) adds an
    ``slm-mux@POLICY`` row (:func:`compare`).
    """
    policy = Policy.parse(pool.defaults.adaptive) if adaptive is None else adaptive
    discussions = discussion_methods()
    settings = {
        method: discussions[method].settings(**(options or {}).get(method, {}))
        for method in methods
        if method in discussions
    }
    for chosen in settings.values():
        for role in ROLES:
            name = getattr(chosen, role, None)
            if name is not None and name not in pool.names:
                raise InputError(
                    f"--{role} {name!r} is not a pool model; the pool has {', '.join(pool.names)}"
                )
    members = members_of(pool, k=k)

    async def compared() -> Comparison:
        try:
            with await Store.open(store) as opened:
                await warm_members(members)
                accuracy = await _tie_break_accuracy(
                    opened, members, pool, task, validation, warn, progress
                )
                return await compare(
                    members,
                    task,
                    questions,
                    store=opened,
                    methods=methods,
                    settings=settings,
                    validation_accuracy=accuracy,
                    progress=progress,
                    adaptive=policy,
                )
        finally:
            await close_members(members)

    return asyncio.run(compared())
