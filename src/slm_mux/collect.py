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
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import (
    Task as ProgressTask,
)
from rich.text import Text

from slm_mux.backends.base import Batch, Price
from slm_mux.engine import sample_stream
from slm_mux.errors import BackendError, InputError
from slm_mux.members import Member, close_members
from slm_mux.pool import Pool, members_of
from slm_mux.sample import Sample, Split
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

    @property
    def cost_usd(self) -> float | None:
        """What this run's tokens cost, when the pool file gives the model's prices."""
        if self.price is None:
            return None
        return self.price.cost_usd(self.prompt_tokens, self.completion_tokens)


@dataclass(frozen=True)
class CollectReport:
    """What a collection run of one split and task did, per model, and how long it took."""

    models: dict[str, ModelProgress]
    seconds: float
    split: Split = "test"
    task: str = ""

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
        return lines

    def first_failure(self) -> str | None:
        """``model M, question Q: error`` of the first failure, if any."""
        for progress in self.models.values():
            if progress.errors:
                return f"model {progress.model!r}, question {progress.errors[0]}"
        return None


class RateColumn(ProgressColumn):
    """Samples per second collected by this run, tokens and errors of one model's row.

    The rate counts only this run's samples (the ``collected`` field), not the
    ones found already stored, over the row's elapsed time.
    """

    def render(self, task: ProgressTask) -> Text:
        collected: int = task.fields["collected"]
        elapsed = task.elapsed
        rate = f"{collected / elapsed:5.1f}/s" if elapsed and collected else "    -/s"
        return Text(f"{rate} {task.fields['tokens']:>7} tok {task.fields['errors']} err")


def _check_settings(store: Store, member: Member, task: str, split: Split) -> None:
    """Refuse to mix samples drawn with other generation settings under one model name."""
    if member.settings_hash is None:
        return
    other = store.settings_hashes(member.name, task, split) - {member.settings_hash}
    if other:
        raise InputError(
            f"{store.path}: model {member.name!r} has {split} samples drawn with other "
            "generation settings (model, temperature, max_tokens or seed); "
            "use another store or model name"
        )


def _missing(wanted: int, stored: set[tuple[str, int]], question_id: str) -> list[int]:
    return [i for i in range(wanted) if (question_id, i) not in stored]


def progress_display(show: bool | None = None, console: Console | None = None) -> Progress:
    """Progress bars on stderr; off when ``show`` is false or stderr is not a terminal."""
    console = console or Console(file=sys.stderr)
    visible = console.is_terminal if show is None else show and console.is_terminal
    return Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(bar_width=12),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not visible,
    )


async def collect(
    members: Sequence[Member],
    task: Task,
    questions: Sequence[Question],
    *,
    split: Split,
    store: Store,
    samples: int | None = None,
    progress: Progress | None = None,
) -> CollectReport:
    """Collect ``samples`` (default: each member's ``k``) samples per model per question.

    Samples already stored are skipped; the rest are requested concurrently
    across models and questions (each backend bounds its own concurrency) and
    committed batch by batch as they arrive. ``progress`` shows a row per
    model (default: none).
    """
    started = time.perf_counter()
    store.add_questions(task.name, split, [(q.id, q.text, q.reference) for q in questions])
    display = progress or progress_display(False)
    counters: dict[str, ModelProgress] = {}
    jobs = []
    for member in members:
        _check_settings(store, member, task.name, split)
        wanted = member.k if samples is None else samples
        stored = store.stored_keys(member.name, task.name, split)
        counter = ModelProgress(member.name, wanted=wanted * len(questions), price=member.price)
        counters[member.name] = counter
        todo = [(q, _missing(wanted, stored, q.id)) for q in questions]
        todo = [(q, missing) for q, missing in todo if missing]
        counter.already_stored = counter.wanted - sum(len(m) for _, m in todo)
        row = display.add_task(
            member.name,
            total=counter.wanted,
            completed=counter.already_stored,
            collected=0,
            tokens=0,
            errors=0,
        )
        writer = _Writer(member, task, split, store, counter, display, row)
        jobs += [writer.question(question, missing) for question, missing in todo]
    running = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*running)
    except BaseException:
        # A store or grading failure ends the run: stop every other request first.
        for pending in running:
            pending.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    return CollectReport(counters, time.perf_counter() - started, split, task.name)


@dataclass(frozen=True)
class _Writer:
    """Collects one model's questions and commits each batch of samples as it arrives."""

    member: Member
    task: Task
    split: Split
    store: Store
    counter: ModelProgress
    progress: Progress
    row: TaskID

    async def question(self, question: Question, missing: list[int]) -> None:
        """Request the ``missing`` samples of ``question``; store them or record the failure."""
        got = 0
        error: str | None = None
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
                await self._commit(question, batch)
                got += len(batch)
        if error is None and got != len(missing):
            error = f"got {got} of {len(missing)} samples"
        name, task, split = self.member.name, self.task.name, self.split
        if error is not None:
            self.store.record_failure(name, task, question.id, split, error)
            self.counter.failed_questions += 1
            self.counter.errors.append(f"{question.id}: {error}")
            self.progress.update(self.row, errors=self.counter.failed_questions)
        else:
            self.store.clear_failure(name, task, question.id, split)

    async def _commit(self, question: Question, batch: Batch) -> None:
        """Grade ``batch`` (off the event loop: math-verify may be slow) and store it."""
        task = self.task

        def graded() -> list[Sample]:
            made = []
            for index, completion in batch:
                answer = task.extract(completion.text)
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
        self.store.add(samples)
        counter = self.counter
        counter.collected += len(samples)
        counter.prompt_tokens += sum(c.prompt_tokens or 0 for _, c in batch)
        counter.completion_tokens += sum(c.completion_tokens or 0 for _, c in batch)
        self.progress.update(
            self.row,
            advance=len(samples),
            collected=counter.collected,
            tokens=counter.prompt_tokens + counter.completion_tokens,
        )


async def collect_splits(
    members: Sequence[Member],
    plan: Mapping[Split, QuestionSet],
    *,
    store: Store,
    samples: int | None = None,
    show_progress: bool | None = None,
    log: TextIO | None = None,
) -> list[CollectReport]:
    """Collect every split of ``plan`` (and every task of each) with one set of members."""
    reports = []
    for split, question_set in plan.items():
        for task_name, questions in question_set.by_task.items():
            if log is not None:
                print(f"collecting {split} ({task_name}): {len(questions)} questions", file=log)
            with progress_display(show_progress) as progress:
                reports.append(
                    await collect(
                        members,
                        get_task(task_name),
                        questions,
                        split=split,
                        store=store,
                        samples=samples,
                        progress=progress,
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
    show_progress: bool | None = None,
    log: TextIO | None = None,
) -> list[CollectReport]:
    """Build the pool's backends once, collect every split of ``plan``, close the backends.

    ``models`` picks models by name (default: the whole pool); ``samples``
    replaces each model's ``k`` as the number of samples to store per question.
    """
    members = members_of(pool, models=models)

    async def run() -> list[CollectReport]:
        try:
            with Store(store) as opened:
                return await collect_splits(
                    members,
                    plan,
                    store=opened,
                    samples=samples,
                    show_progress=show_progress,
                    log=log,
                )
        finally:
            await close_members(members)

    return asyncio.run(run())
