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
call each), shared by ``slm-mux``, ``agent-forest``, ``sc``, ``single`` and
``oracle``; then each selected discussion method. Within a phase all questions run at
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.progress import Progress

from slm_mux.adaptive import Policy
from slm_mux.backends.base import Completion
from slm_mux.collect import collect_splits, has_validation, progress_display, tie_break_accuracy
from slm_mux.comparison import SHARED, SHARED_METHODS, Comparison, Groupthink, MethodResult
from slm_mux.engine import ModelSamples, mux_decision, sample_rounds, sample_seed
from slm_mux.errors import BackendError, InputError, StoreError
from slm_mux.live import ROLES, best_model, resolve_roles, send
from slm_mux.members import Member, close_members
from slm_mux.methods import (
    METHODS,
    Call,
    MethodOutcome,
    Settings,
    call_all,
    first_round_majority,
    vote,
)
from slm_mux.pool import Pool, members_of
from slm_mux.sample import Split
from slm_mux.selection import decide
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

    def caller(self, question: Question) -> RecordingCaller:
        """A caller for one question of this phase."""
        return RecordingCaller(self, question)

    def totals(self, used: Sequence[tuple[str, str, str]]) -> tuple[int, int, int]:
        """Requests, prompt and completion tokens of the recorded calls ``used``."""
        calls = [self.recorded[key] for key in used]
        return (
            sum(c.requests for c in calls),
            sum(c.prompt_tokens or 0 for c in calls),
            sum(c.completion_tokens or 0 for c in calls),
        )


@dataclass
class RecordingCaller:
    """The :class:`~slm_mux.methods.Caller` of one method on one question.

    ``used`` lists the keys of the calls it made (replayed or sent), in order.
    """

    phase: _Phase
    question: Question
    used: list[tuple[str, str, str]] = field(default_factory=list)

    async def __call__(
        self, model: str, step: str, messages: list[Message], *, n: int = 1
    ) -> list[str]:
        """The ``n`` replies of ``model``: from the store, else from its backend (stored)."""
        return await self._call(model, step, messages, n, None)

    async def samples(self, member: Member, messages: list[Message], numbers: range) -> list[str]:
        """Samples ``numbers`` of ``member``'s independent-sample stream (step
        ``sample@FIRST``): seeded like the shared phase's samples of the same numbers."""
        key = f"{self.question.id}:{SHARED}:sample:{member.name}"
        seed = sample_seed(member.seed, key, numbers[0])
        return await self._call(member.name, f"sample@{numbers[0]}", messages, len(numbers), seed)

    async def _call(
        self, model: str, step: str, messages: list[Message], n: int, seed: int | None
    ) -> list[str]:
        phase, question = self.phase, self.question
        key = (question.id, step, model)
        stored = phase.recorded.get(key)
        if stored is not None:
            if (stored.messages, stored.n) != (messages, n):
                raise StoreError(
                    f"{phase.store.path}: method {phase.method!r}, question {question.id!r}, "
                    f"step {step!r}, model {model!r}: the stored call had another prompt; "
                    "use another --store"
                )
            self.used.append(key)
            return stored.replies
        member = phase.members.get(model)
        if member is None:
            raise InputError(f"model {model!r} is not in the pool")
        if seed is None:
            seed_key = f"{question.id}:{phase.method}:{step}:{member.name}"
            seed = sample_seed(member.seed, seed_key, 0)
        call = await self._send(member, step, messages, n, seed)
        phase.store.add_call(call)
        phase.recorded[key] = call
        self.used.append(key)
        return call.replies

    async def _send(
        self, member: Member, step: str, messages: list[Message], n: int, seed: int | None
    ) -> RecordedCall:
        """One call through the member's backend: every reply, the responses it took."""
        phase, question = self.phase, self.question
        started = time.perf_counter()
        sent = await send(member, messages, n, seed)
        phase.sent += sent.responses
        return RecordedCall(
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


Run = Callable[[Question, RecordingCaller], Awaitable[MethodOutcome]]
"""One method on one question, through the question's caller."""


@dataclass(frozen=True)
class _Done:
    """A phase's outcome per question (in question order), its callers and wall time."""

    outcomes: list[MethodOutcome]
    callers: list[RecordingCaller]
    wall_s: float


async def _run_phase(
    phase: _Phase, questions: Sequence[Question], run: Run, display: Progress, key: RunKey
) -> _Done:
    """Run every question of a phase at once; a model's failure fails only its question.

    The phase's wall time is added to the store's record only when it sent requests.
    """
    row = display.add_task(phase.method, total=len(questions), collected=0, tokens=0, errors=0)
    failed = 0

    async def one(question: Question) -> tuple[MethodOutcome, RecordingCaller]:
        nonlocal failed
        caller = phase.caller(question)
        try:
            outcome = await run(question, caller)
        except BackendError as error:
            outcome = MethodOutcome(None, detail={"failures": [{"error": str(error)}]})
        failed += bool(outcome.detail.get("failures"))
        display.update(row, advance=1, collected=phase.sent, errors=failed)
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
    wall = phase.store.add_method_wall(key, elapsed if phase.sent else 0.0)
    return _Done([outcome for outcome, _ in done], [caller for _, caller in done], wall)


def _sampler(task: Task, members: Sequence[Member]) -> Run:
    """The shared independent sampling: ``k`` samples per model, one call each."""

    async def sample(question: Question, caller: RecordingCaller) -> MethodOutcome:
        calls = [Call(m.name, "sample", task.messages(question), n=m.k) for m in members]
        replies, failures = await call_all(caller, calls)
        answers = {
            member.name: [task.extract(text) for text in texts]
            for member, texts in zip(members, replies, strict=True)
            if texts is not None
        }
        return MethodOutcome(None, detail={"answers": answers, "failures": failures})

    return sample


def _adaptive_sampler(
    task: Task, members: Sequence[Member], policy: Policy, accuracy: Mapping[str, float]
) -> Run:
    """SLM-MUX with its samples drawn in ``policy``'s rounds, each round's call recorded."""

    async def sample(question: Question, caller: RecordingCaller) -> MethodOutcome:
        messages = task.messages(question)

        async def draw(member: Member, numbers: Sequence[int]) -> ModelSamples:
            try:
                texts = await caller.samples(member, messages, range(numbers[0], numbers[-1] + 1))
            except BackendError as error:
                return ModelSamples(member.name, [], [None] * len(numbers), str(error))
            completions = [Completion(text, None, None, 0.0, None) for text in texts]
            return ModelSamples(member.name, completions, [task.extract(t) for t in texts])

        sampled = await sample_rounds(
            members, task, question, policy=policy, validation_accuracy=accuracy, draw=draw
        )
        k = {m.name: m.k for m in members}
        decision = mux_decision(sampled.results, task, accuracy, k)
        failures = [{"model": r.model, "error": r.error} for r in sampled.results if r.error]
        detail = {"rounds": sampled.rounds, "samples": sampled.drawn, "failures": failures}
        return MethodOutcome(decision.answer, detail=detail)

    return sample


def _shared_answers(
    method: str,
    answers: dict[str, list[str | None]],
    task: Task,
    members: Sequence[Member],
    best: str,
    accuracy: Mapping[str, float],
    reference: str,
) -> bool:
    """Whether shared ``method`` answers a question correctly from its independent samples."""
    if method == "slm-mux":
        if not answers:
            return False
        k = {m.name: m.k for m in members if m.name in answers}
        decision = decide(answers, task.cluster, k=k, validation_accuracy=accuracy)
        return task.grade(decision.answer, reference)
    if method == "agent-forest":
        pooled = [answer for m in members for answer in answers.get(m.name, [])]
        return task.grade(vote(pooled, task), reference)
    if method == "sc":
        return best in answers and task.grade(vote(answers[best], task), reference)
    if method == "single":
        return best in answers and task.grade(answers[best][0], reference)
    if method == "oracle":
        return any(task.grade(vote(found, task), reference) for found in answers.values())
    raise ValueError(f"not a shared method: {method!r}")


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
    show_progress: bool | None = None,
    log: TextIO | None = None,
    adaptive: Policy | None = None,
) -> Comparison:
    """Run ``methods`` on ``questions`` with recorded calls; their results, also stored.

    ``settings`` gives the discussion methods' options (default: each one's defaults);
    ``validation_accuracy`` breaks SLM-MUX's confidence ties and picks the best model
    (``sc``, ``single``, the default moa aggregator and mav generator), else pool order.
    With an ``adaptive`` policy other than ``full`` and ``slm-mux`` among ``methods``, a
    row ``slm-mux@POLICY`` follows ``slm-mux``: SLM-MUX with its samples drawn live in
    the policy's rounds (recorded calls of their own; sample ``i`` seeded as the shared
    sample ``i``, so ``exact`` decides as ``slm-mux`` where the backend keeps seeds).
    """
    accuracy = dict(validation_accuracy or {})
    best = best_model(members, accuracy)
    by_name = {m.name: m for m in members}
    names = [m.name for m in members]
    qhash = questions_hash(questions)
    store.add_questions(task.name, split, [(q.id, q.text, q.reference) for q in questions])
    results: dict[str, MethodResult] = {}

    def phase(method: str, options: Mapping[str, Any]) -> tuple[_Phase, RunKey]:
        digest = config_hash(method, options, members)
        recorded = store.calls(method, digest, task.name, split)
        made = _Phase(method, digest, task, split, store, by_name, recorded)
        return made, (method, digest, task.name, split, qhash)

    def result(method: str, made: _Phase, done: _Done, correct: list[bool], **extra: Any) -> None:
        calls, prompt, completion = made.totals([k for c in done.callers for k in c.used])
        failed = sum(bool(o.detail.get("failures")) for o in done.outcomes)
        errors = (f["error"] for o in done.outcomes for f in o.detail.get("failures", ()))
        found = MethodResult(
            method,
            questions=len(questions),
            correct=sum(correct),
            calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            wall_s=round(done.wall_s, 3),  # as stored: the report shows the same figure
            failed=failed,
            reasons=tuple(dict.fromkeys(errors)),
            **extra,
        )
        results[method] = found
        store.save_method_result(
            (method, made.config_hash, task.name, split, qhash), found.to_json()
        )

    with progress_display(show_progress) as display:
        if any(method in SHARED_METHODS for method in methods):
            if log is not None:
                print(f"compare: independent samples, {len(questions)} questions", file=log)
            made, key = phase(SHARED, {})
            done = await _run_phase(made, questions, _sampler(task, members), display, key)
            for method in (m for m in methods if m in SHARED_METHODS):
                correct = [
                    _shared_answers(
                        method, o.detail["answers"], task, members, best, accuracy, q.reference
                    )
                    for o, q in zip(done.outcomes, questions, strict=True)
                ]
                single = best if method in ("sc", "single") else None
                result(method, made, done, correct, model=single, shared=SHARED)
        for method in (m for m in methods if m not in SHARED_METHODS):
            spec = METHODS[method]
            chosen = resolve_roles(settings.get(method) or spec.settings(), best)
            if log is not None:
                print(f"compare: {method}, {len(questions)} questions", file=log)
            made, key = phase(method, chosen.to_json())

            async def run(question: Question, caller: RecordingCaller) -> MethodOutcome:
                return await spec.run(question, task, names, caller, chosen)  # noqa: B023

            done = await _run_phase(made, questions, run, display, key)
            correct = [
                task.grade(o.answer, q.reference)
                for o, q in zip(done.outcomes, questions, strict=True)
            ]
            groupthink = _groupthink(done.outcomes, correct, task, questions)
            result(method, made, done, correct, groupthink=groupthink)
        if adaptive is not None and adaptive.kind != "full" and "slm-mux" in methods:
            name = f"slm-mux@{adaptive}"
            if log is not None:
                print(f"compare: {name}, {len(questions)} questions", file=log)
            made, key = phase(name, {"k": {m.name: m.k for m in members}})
            sampler = _adaptive_sampler(task, members, adaptive, accuracy)
            done = await _run_phase(made, questions, sampler, display, key)
            correct = [
                task.grade(o.answer, q.reference)
                for o, q in zip(done.outcomes, questions, strict=True)
            ]
            result(name, made, done, correct)
    order = [m for method in methods for m in (method, f"slm-mux@{adaptive}") if m in results]
    ordered = {method: results[method] for method in dict.fromkeys(order)}
    return Comparison(task.name, split, len(questions), ordered)


async def _tie_break_accuracy(
    store: Store,
    members: Sequence[Member],
    pool: Pool,
    task: Task,
    validation: Sequence[Question] | None,
    show_progress: bool | None,
    log: TextIO | None,
    warn: Callable[[str], None],
) -> dict[str, float]:
    """Validation accuracy per model: the pool file's, overridden by the store's validation
    split (collected first from ``validation`` when the store has none)."""
    accuracy = pool.validation_accuracy
    if not has_validation(store, task.name) and validation:
        plan: dict[Split, QuestionSet] = {"validation": QuestionSet({task.name: list(validation)})}
        reports = await collect_splits(
            members, plan, store=store, show_progress=show_progress, log=log
        )
        if not all(report.complete for report in reports):
            warn("some validation questions failed; tie-breaks use what was collected")
    if has_validation(store, task.name):
        accuracy = tie_break_accuracy(store, task.name, accuracy, warn)
    elif not accuracy:
        warn(
            f"{store.path}: no validation samples of task {task.name!r} (see --validation-data): "
            "confidence ties, sc, single and the default roles go to pool order"
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
    show_progress: bool | None = None,
    log: TextIO | None = None,
    warn: Callable[[str], None] = lambda message: None,
    adaptive: Policy | None = None,
) -> Comparison:
    """Build the pool's backends once, compare ``methods`` on ``questions``, close them.

    ``options`` gives each discussion method's settings by field (``{"debate":
    {"rounds": 3}}``); every option and role is checked before a model is loaded. ``k``
    replaces every model's own ``k``; ``validation`` questions are collected first when
    the store has no validation samples of the task. ``adaptive`` (default: the pool's
    ``defaults.adaptive``) adds an ``slm-mux@POLICY`` row (:func:`compare`).
    """
    policy = Policy.parse(pool.defaults.adaptive) if adaptive is None else adaptive
    settings = {
        method: METHODS[method].settings(**(options or {}).get(method, {}))
        for method in methods
        if method in METHODS
    }
    for chosen in settings.values():
        for role in ROLES:
            name = getattr(chosen, role, None)
            if name is not None and name not in pool.names:
                raise InputError(
                    f"--{role} {name!r} is not a pool model; the pool has {', '.join(pool.names)}"
                )
    members = members_of(pool, k=k)

    async def run() -> Comparison:
        try:
            with Store(store) as opened:
                accuracy = await _tie_break_accuracy(
                    opened, members, pool, task, validation, show_progress, log, warn
                )
                return await compare(
                    members,
                    task,
                    questions,
                    store=opened,
                    methods=methods,
                    settings=settings,
                    validation_accuracy=accuracy,
                    show_progress=show_progress,
                    log=log,
                    adaptive=policy,
                )
        finally:
            await close_members(members)

    return asyncio.run(run())
