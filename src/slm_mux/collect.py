"""Resumable collection: samples per model per question, each committed as it arrives.

Every batch of finished completions is graded and committed at once, keyed by
(model, task, question, split, sample), also while the other samples of its
question are still on their way (a server that ignores ``n`` answers them one
request at a time). A run killed at any point — even by ``kill -9`` — loses
at most the samples in flight and resumes by asking only for the samples that
are not stored yet. A failed question is recorded in the store's failure
table and asked again on the next run; one failing model never stops the
others.

:func:`collect_pool` is the one collection runner: it builds a pool's
backends once, collects every split and task, and closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_mux.adaptive import Policy
from slm_mux.backends.base import Batch, Completion, Price, Replicated
from slm_mux.engine import ModelSamples, sample_rounds, sample_stream
from slm_mux.errors import BackendError, InputError
from slm_mux.members import Member, close_members
from slm_mux.pool import Pool, members_of
from slm_mux.progress import SILENT, Progress, ProgressRow
from slm_mux.reply_health import ReplyHealth
from slm_mux.sample import HASHED_SETTINGS, Sample, Split
from slm_mux.store import Store
from slm_mux.tasks import Question, Task, get_task
from slm_mux.tasks.loading import QuestionSet


@dataclass
class ModelProgress:
    """Counters for one model over one collection run."""

    model: str
    wanted: int = 0
    already_stored: int = 0
    collected: int = 0
    failed_questions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    price: Price | None = None
    errors: list[str] = field(default_factory=list)
    replies: ReplyHealth = field(default_factory=ReplyHealth)

    @property
    def cost_usd(self) -> float | None:
        """What this run's tokens cost, when the pool file gives the model's prices."""
        if self.price is None:
            return None
        return self.price.cost_usd(self.prompt_tokens, self.completion_tokens)


@dataclass
class AdaptiveTally:
    """What an adaptive collection drew: over its questions, the policy's rounds (a
    resumed run counts the rounds it replayed from the store too) and the samples
    stored of the ``full`` that full sampling stores."""

    policy: Policy
    questions: int = 0
    rounds: int = 0
    stored: int = 0
    full: int = 0

    def line(self) -> str:
        """``adaptive exact: 412 of 600 samples stored (69 %), 2.10 rounds per question``."""
        share = f" ({100 * self.stored / self.full:.0f} %)" if self.full else ""
        rounds = self.rounds / self.questions if self.questions else 0.0
        return (
            f"adaptive {self.policy}: {self.stored} of {self.full} samples stored{share}, "
            f"{rounds:.2f} rounds per question"
        )


@dataclass(frozen=True)
class CollectReport:
    """What a collection run of one split and task did, per model, and how long it took."""

    models: dict[str, ModelProgress]
    seconds: float
    split: Split = "test"
    task: str = ""
    adaptive: AdaptiveTally | None = None

    @property
    def complete(self) -> bool:
        """Whether every wanted sample is now stored."""
        return all(p.failed_questions == 0 for p in self.models.values())

    def summary(self, errors_shown: int = 3) -> list[str]:
        """One line per model (new, stored, failed, tokens, cost), then its first errors."""
        lines = []
        for progress in self.models.values():
            tokens = progress.prompt_tokens + progress.completion_tokens
            cost = "" if progress.cost_usd is None else f", ${progress.cost_usd:.4f}"
            lines.append(
                f"{self.split} {self.task}: {progress.model}: {progress.collected} new samples, "
                f"{progress.already_stored} already stored, "
                f"{progress.failed_questions} failed questions, {tokens} tokens{cost}"
            )
            lines += [f"  {error}" for error in progress.errors[:errors_shown]]
        if self.adaptive is not None:
            lines.append(f"{self.split} {self.task}: {self.adaptive.line()}")
        return lines

    def first_failure(self) -> str | None:
        """``model M, question Q: error`` of the first failure, if any."""
        for progress in self.models.values():
            if progress.errors:
                return f"model {progress.model!r}, question {progress.errors[0]}"
        return None


def replica_line(member: Member) -> str:
    """A replicated model's requests, failed attempts and cooldowns per replica, in
    pool-file order (``req 40 38 41 err 0 3 0 cool 0 1 0``); empty for one server."""
    if not isinstance(member.backend, Replicated):
        return ""
    stats = member.backend.replica_stats()
    if len(stats) < 2:
        return ""
    columns = zip(*((s.requests, s.errors, s.cooldowns) for s in stats), strict=True)
    return " ".join(
        f"{label} {' '.join(map(str, counts))}"
        for label, counts in zip(("req", "err", "cool"), columns, strict=True)
    )


def save_replica_stats(store: Store, members: Sequence[Member]) -> None:
    """Keep each model's per-replica counters in ``store`` (models that sent no request
    keep those of their previous collection); a synchronous write (see :meth:`Store.write`)."""
    for member in members:
        if isinstance(member.backend, Replicated):
            stats = member.backend.replica_stats()
            if any(s.requests for s in stats):
                store.save_replica_stats(
                    member.name, [(s.url, s.requests, s.errors, s.cooldowns) for s in stats]
                )


def _check_settings(store: Store, member: Member, task: str, split: Split) -> None:
    """Refuse to mix samples drawn with other generation settings under one model name."""
    if member.settings_hash is None:
        return
    other = store.settings_hashes(member.name, task, split) - {member.settings_hash}
    if other:
        raise InputError(
            f"{store.path}: model {member.name!r} has {split} samples drawn with other "
            f"generation settings ({HASHED_SETTINGS}); "
            "use another store or model name"
        )


def _missing(wanted: int, stored: set[tuple[str, int]], question_id: str) -> list[int]:
    return [i for i in range(wanted) if (question_id, i) not in stored]


async def collect(
    members: Sequence[Member],
    task: Task,
    questions: Sequence[Question],
    *,
    split: Split,
    store: Store,
    samples: int | None = None,
    progress: Progress = SILENT,
    adaptive: Policy | None = None,
    validation_accuracy: Mapping[str, float] | None = None,
) -> CollectReport:
    """Collect ``samples`` (default: each member's ``k``) samples per model per question.

    Samples already stored are skipped; the rest are requested concurrently
    across models and questions (each backend bounds its own concurrency) and
    committed batch by batch as they arrive, on the store's writer thread
    (:meth:`Store.write`): while another process holds the store's write lock,
    requests go on being sent and received. ``progress`` gets a row per model,
    advanced by samples stored (with their tokens) and failed questions; a
    replicated model's per-replica counters are the row's detail.

    With an ``adaptive`` policy other than ``full`` (and no ``samples``), each
    question is sampled jointly across the models in the policy's rounds
    (:func:`~slm_mux.engine.sample_rounds`, tie-breaks by ``validation_accuracy``, then
    by model name as ``eval`` replays them)
    and only the samples drawn are stored: a prefix ``0..n-1`` of each model's
    ``k``. A resumed run replays the policy over the stored samples from its first
    round and draws only what is missing, so it ends where an uninterrupted run ends.
    """
    if adaptive is not None and adaptive.kind == "full":
        adaptive = None
    if adaptive is not None and samples is not None:
        raise InputError(f"collect: samples={samples} with adaptive {adaptive}; pick one")
    started = time.perf_counter()
    texts = [(q.id, q.text, q.reference) for q in questions]
    await store.write(lambda: store.add_questions(task.name, split, texts))
    counters: dict[str, ModelProgress] = {}
    writers: dict[str, _Writer] = {}
    jobs: list[Coroutine[Any, Any, object]] = []
    for member in members:
        _check_settings(store, member, task.name, split)
        wanted = member.k if samples is None else samples
        stored = store.stored_keys(member.name, task.name, split)
        counter = ModelProgress(member.name, wanted=wanted * len(questions), price=member.price)
        counters[member.name] = counter
        todo = [(q, _missing(wanted, stored, q.id)) for q in questions]
        todo = [(q, missing) for q, missing in todo if missing]
        counter.already_stored = counter.wanted - sum(len(m) for _, m in todo)
        row = progress.row(member.name, total=counter.wanted, done=counter.already_stored)
        row.detail(replica_line(member))
        writer = _Writer(member, task, split, store, counter, row)
        writers[member.name] = writer
        if adaptive is None:
            jobs += [writer.question(question, missing) for question, missing in todo]
    tally = None
    if adaptive is not None:
        tally = AdaptiveTally(adaptive)
        stored_answers: dict[tuple[str, str], dict[int, str | None]] = {}
        for sample in store.each_sample(split=split, models=list(writers), task=task.name):
            stored_answers.setdefault((sample.model, sample.question_id), {})[sample.sample] = (
                sample.answer
            )
        accuracy = dict(validation_accuracy or {})
        # Models in name order: equal validation accuracies (or none) break ties by name,
        # as ``eval --adaptive`` replays the store, so its replay asks for what is stored.
        by_name = sorted(members, key=lambda member: member.name)
        joint = _Joint(by_name, task, writers, stored_answers, adaptive, accuracy, tally)
        jobs = [joint.question(question) for question in questions]
    running = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*running)
    except BaseException:
        # A store or grading failure ends the run: stop every other request first.
        for pending in running:
            pending.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    for counter in counters.values():
        counter.replies.warn()
    return CollectReport(counters, time.perf_counter() - started, split, task.name, tally)


@dataclass(frozen=True)
class _Joint:
    """Adaptive collection: one question's samples drawn jointly by every model's writer."""

    members: Sequence[Member]
    task: Task
    writers: Mapping[str, _Writer]
    stored: Mapping[tuple[str, str], Mapping[int, str | None]]
    """Answers already stored, by (model, question id) and sample number."""
    policy: Policy
    validation_accuracy: Mapping[str, float]
    tally: AdaptiveTally

    async def question(self, question: Question) -> None:
        """Run the policy's rounds from the first: each round takes the samples it asks for
        from the store where they are stored and draws (and stores) only the others.

        Replaying from the first round, rather than going on from the stored samples, is
        what makes a resume complete: a run killed mid-round (or run over fewer models)
        leaves samples the policy would not have drawn in that order, and the policy over
        them would ask for other rounds than an uninterrupted run asks for.
        """
        stored = {m.name: self.stored.get((m.name, question.id), {}) for m in self.members}

        async def draw(member: Member, numbers: Sequence[int]) -> ModelSamples:
            have = stored[member.name]
            missing = [i for i in numbers if i not in have]
            got = ModelSamples(member.name, [], [])
            if missing:
                got = await self.writers[member.name].question(question, missing)
            if got.error is not None:
                return got
            new = dict(zip(missing, got.answers, strict=True))
            answers = [have[i] if i in have else new[i] for i in numbers]
            return ModelSamples(member.name, got.completions, answers, None, got.responses)

        try:
            sampled = await sample_rounds(
                self.members,
                self.task,
                question,
                policy=self.policy,
                validation_accuracy=self.validation_accuracy,
                draw=draw,
            )
        except BackendError:
            return  # every model failed: each writer recorded its failure
        self.tally.questions += 1
        self.tally.rounds += sampled.rounds
        self.tally.full += sampled.full
        for member, result in zip(self.members, sampled.results, strict=True):
            writer = self.writers[member.name]
            held = len(stored[member.name]) + len(result.completions)
            self.tally.stored += held
            if result.error is None:
                await writer.clear_failure(question)
            # The samples the policy did not need count as done on the progress row.
            writer.row.advance(max(member.k - held, 0))


@dataclass(frozen=True)
class _Writer:
    """Collects one model's questions and commits each batch of samples as it arrives."""

    member: Member
    task: Task
    split: Split
    store: Store
    counter: ModelProgress
    row: ProgressRow

    async def question(self, question: Question, missing: Sequence[int]) -> ModelSamples:
        """Request the ``missing`` samples of ``question``; store them or record the failure.

        Returns what arrived (answers in the order of ``missing``; a failure's ``error``).
        """
        got = 0
        error: str | None = None
        found: dict[int, Completion] = {}
        answers: dict[int, str | None] = {}
        responses = 0
        stream = sample_stream(self.member, self.task, question, missing)
        async with contextlib.aclosing(stream):
            while True:
                try:
                    batch = await anext(stream)
                except StopAsyncIteration:
                    break
                except BackendError as failure:
                    error = str(failure)
                    break
                responses += 1
                found.update(batch)
                answers.update((s.sample, s.answer) for s in await self._commit(question, batch))
                got += len(batch)
        if error is None and got != len(missing):
            error = f"got {got} of {len(missing)} samples"
        name, task, split = self.member.name, self.task.name, self.split
        if error is not None:
            failed = error
            store = self.store
            await store.write(lambda: store.record_failure(name, task, question.id, split, failed))
            self.counter.failed_questions += 1
            self.counter.errors.append(f"{question.id}: {error}")
            self.row.advance(errors=1)
            self.row.detail(replica_line(self.member))
        else:
            await self.clear_failure(question)
        arrived = [number for number in missing if number in found]
        return ModelSamples(
            name, [found[i] for i in arrived], [answers[i] for i in arrived], error, responses
        )

    async def clear_failure(self, question: Question) -> None:
        """Forget a failure of ``question`` recorded by an earlier run (it succeeded now)."""
        store, name, task, split = self.store, self.member.name, self.task.name, self.split
        await store.write(lambda: store.clear_failure(name, task, question.id, split))

    async def _commit(self, question: Question, batch: Batch) -> list[Sample]:
        """Grade ``batch`` (off the event loop: math-verify may be slow) and store it on the
        store's writer thread."""
        task = self.task

        def graded() -> list[Sample]:
            made = []
            for index, completion in batch:
                answer = task.answer(question, completion.text)
                made.append(
                    Sample(
                        model=self.member.name,
                        task=task.name,
                        question_id=question.id,
                        split=self.split,
                        sample=index,
                        answer=answer,
                        reference=question.reference,
                        correct=task.grade(answer, question.reference),
                        text=completion.text,
                        prompt_tokens=completion.prompt_tokens,
                        completion_tokens=completion.completion_tokens,
                        latency_s=completion.latency_s,
                        finish_reason=completion.finish_reason,
                        settings_hash=self.member.settings_hash,
                    )
                )
            return made

        samples = await asyncio.to_thread(graded)
        store = self.store
        # Another process collecting into the same store may have stored some of these
        # first: count only the rows this one inserted as new.
        inserted = await store.write(lambda: store.add(samples))
        counter = self.counter
        counter.replies.add_samples(samples)
        prompt_tokens = sum(c.prompt_tokens or 0 for _, c in batch)
        completion_tokens = sum(c.completion_tokens or 0 for _, c in batch)
        counter.collected += inserted
        counter.prompt_tokens += prompt_tokens
        counter.completion_tokens += completion_tokens
        self.row.advance(len(samples), tokens=prompt_tokens + completion_tokens)
        self.row.detail(replica_line(self.member))
        return samples


def has_validation(store: Store, task: str) -> bool:
    """Whether ``store`` holds validation samples of ``task``."""
    return any(h.task == task and h.split == "validation" and h.samples for h in store.summary())


def tie_break_accuracy(
    store: Store,
    task: str,
    given: Mapping[str, float],
    warn: Callable[[str], None] = lambda message: None,
) -> dict[str, float]:
    """Tie-break accuracy per model: ``given`` (the pool file's), overridden by the
    store's validation split of ``task`` when it has one."""
    from slm_mux.study import stored_validation_accuracy

    accuracy = dict(given)
    if has_validation(store, task):
        accuracy.update(stored_validation_accuracy(store.path, task=task, warn=warn))
    return accuracy


async def collect_splits(
    members: Sequence[Member],
    plan: Mapping[Split, QuestionSet],
    *,
    store: Store,
    samples: int | None = None,
    progress: Progress = SILENT,
    adaptive: Policy | None = None,
    validation_accuracy: Mapping[str, float] | None = None,
) -> list[CollectReport]:
    """Collect every split of ``plan`` (and every task of each) with one set of members.

    An ``adaptive`` policy breaks ties by ``validation_accuracy`` (the pool file's)
    overridden by the store's validation split of each task, read when its
    collection starts (collect validation first for lossless ``exact`` test samples).
    Each task of each split is one ``progress`` phase
    (``collecting test (gsm8k): 100 questions``).
    """
    reports = []
    for split, question_set in plan.items():
        for task_name, questions in question_set.by_task.items():
            with progress.phase(f"collecting {split} ({task_name}): {len(questions)} questions"):
                reports.append(
                    await collect(
                        members,
                        get_task(task_name),
                        questions,
                        split=split,
                        store=store,
                        samples=samples,
                        progress=progress,
                        adaptive=adaptive,
                        validation_accuracy=(
                            None
                            if adaptive is None
                            else tie_break_accuracy(store, task_name, validation_accuracy or {})
                        ),
                    )
                )
    return reports


def collect_pool(
    pool: Pool,
    plan: Mapping[Split, QuestionSet],
    *,
    store: str | Path,
    models: Sequence[str] | None = None,
    samples: int | None = None,
    progress: Progress = SILENT,
    adaptive: Policy | None = None,
) -> list[CollectReport]:
    """Build the pool's backends once, collect every split of ``plan``, close the backends.

    ``models`` picks models by name (default: the whole pool); ``samples``
    replaces each model's ``k`` as the number of samples to store per question.
    ``adaptive`` (default: the pool's ``defaults.adaptive``) samples in rounds and
    stores only what the policy draws (:func:`collect`). ``progress`` hears each phase
    and each model's row (:func:`collect_splits`).
    """
    policy = Policy.parse(pool.defaults.adaptive) if adaptive is None else adaptive
    if policy.kind != "full" and samples is not None:
        raise InputError(
            f"--samples with adaptive {policy}: adaptive collection stores at most the "
            "pool's k samples per model (set k in the pool file, or use --adaptive full)"
        )
    members = members_of(pool, models=models)

    async def run() -> list[CollectReport]:
        try:
            with await Store.open(store) as opened:
                try:
                    return await collect_splits(
                        members,
                        plan,
                        store=opened,
                        samples=samples,
                        progress=progress,
                        adaptive=policy,
                        validation_accuracy=pool.validation_accuracy,
                    )
                finally:  # also when interrupted
                    await opened.write(lambda: save_replica_stats(opened, members))
        finally:
            await close_members(members)

    return asyncio.run(run())
