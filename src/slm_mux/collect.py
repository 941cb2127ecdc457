"""Resumable collection: k samples per model per question, written to the store as they arrive.

Every finished request is committed at once, keyed by (model, task, question,
split, sample), so a run killed at any point — even by ``kill -9`` — resumes
by asking only for the samples that are not stored yet. A failed question is
recorded in the store's failure table and asked again on the next run; one
failing model never stops the others.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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

from slm_mux.backends.base import Price
from slm_mux.engine import Member, sample_model
from slm_mux.errors import InputError
from slm_mux.sample import Sample, Split
from slm_mux.store import Store
from slm_mux.tasks import Question, Task, get_task


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
    """What a collection run did, per model, and how long it took."""

    models: dict[str, ModelProgress]
    seconds: float

    @property
    def complete(self) -> bool:
        """Whether every wanted sample is now stored."""
        return all(p.failed_questions == 0 for p in self.models.values())


class _RateColumn(ProgressColumn):
    """Samples per second, tokens and errors of one model's row."""

    def render(self, task: ProgressTask) -> Text:
        speed = f"{task.speed:5.1f}/s" if task.speed else "    -/s"
        return Text(f"{speed} {task.fields['tokens']:>7} tok {task.fields['errors']} err")


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


async def collect(
    members: Sequence[Member],
    task: Task,
    questions: Sequence[Question],
    *,
    split: Split,
    store: Store,
    show_progress: bool = True,
    console: Console | None = None,
) -> CollectReport:
    """Collect ``member.k`` samples per model per question into ``store``.

    Samples already stored are skipped; the rest are requested concurrently
    across models and questions (each backend bounds its own concurrency).
    """
    started = time.perf_counter()
    store.add_questions(task.name, split, [(q.id, q.text, q.reference) for q in questions])
    progress = Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(bar_width=12),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    )
    counters: dict[str, ModelProgress] = {}
    jobs = []
    for member in members:
        _check_settings(store, member, task.name, split)
        stored = store.stored_keys(member.name, task.name, split)
        counter = ModelProgress(member.name, wanted=member.k * len(questions), price=member.price)
        counters[member.name] = counter
        todo = [(q, _missing(member.k, stored, q.id)) for q in questions]
        todo = [(q, missing) for q, missing in todo if missing]
        counter.already_stored = counter.wanted - sum(len(m) for _, m in todo)
        row = progress.add_task(
            member.name,
            total=counter.wanted,
            completed=counter.already_stored,
            tokens=0,
            errors=0,
        )
        jobs += [
            _collect_one(member, task, question, missing, split, store, counter, progress, row)
            for question, missing in todo
        ]
    with progress:
        running = [asyncio.ensure_future(job) for job in jobs]
        try:
            await asyncio.gather(*running)
        except BaseException:
            # A store or grading failure ends the run: stop every other request first.
            for pending in running:
                pending.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
    return CollectReport(counters, time.perf_counter() - started)


async def _collect_one(
    member: Member,
    task: Task,
    question: Question,
    missing: list[int],
    split: Split,
    store: Store,
    counter: ModelProgress,
    progress: Progress,
    row: TaskID,
) -> None:
    """Request the missing samples of one question; store them or record the failure."""
    result = await sample_model(member, task, question, n=len(missing), first_sample=missing[0])
    if result.error is not None or len(result.completions) != len(missing):
        error = result.error or f"got {len(result.completions)} of {len(missing)} samples"
        store.record_failure(member.name, task.name, question.id, split, error)
        counter.failed_questions += 1
        counter.errors.append(f"{question.id}: {error}")
        progress.update(row, errors=counter.failed_questions)
        return
    # Grading may be slow (math-verify), so it stays off the event loop.
    verdicts = await asyncio.to_thread(
        lambda: [task.grade(answer, question.reference) for answer in result.answers]
    )
    samples = [
        Sample(
            model=member.name,
            task=task.name,
            question_id=question.id,
            split=split,
            sample=index,
            answer=answer,
            reference=question.reference,
            correct=correct,
            text=completion.text,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            latency_s=completion.latency_s,
            finish_reason=completion.finish_reason,
            settings_hash=member.settings_hash,
        )
        for index, completion, answer, correct in zip(
            missing, result.completions, result.answers, verdicts, strict=True
        )
    ]
    store.add(samples)
    store.clear_failure(member.name, task.name, question.id, split)
    counter.collected += len(samples)
    counter.prompt_tokens += sum(c.prompt_tokens or 0 for c in result.completions)
    counter.completion_tokens += sum(c.completion_tokens or 0 for c in result.completions)
    tokens = counter.prompt_tokens + counter.completion_tokens
    progress.update(row, advance=len(samples), tokens=tokens)


_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def questions_for(
    task_name: str, data: str | None, *, split: Split, limit: int | None = None, seed: int = 0
) -> tuple[Task, list[Question]]:
    """The task and the questions to collect: from a file, a Hugging Face dataset, or generated.

    ``data`` is a JSON/JSONL file in the task's layout, or (when no such file
    exists) a Hugging Face dataset id such as ``openai/gsm8k``, which needs the
    ``datasets`` package and network access. Task ``custom`` reads a custom
    JSONL file, whose ``type`` names the grader. The ``arith`` task generates
    its own questions when ``data`` is omitted. ``limit`` keeps the first ones.
    """
    from slm_mux.tasks.custom import load_custom
    from slm_mux.tasks.data import load_questions

    if task_name == "custom":
        if data is None:
            raise InputError("task 'custom' needs --data (a custom JSONL file)")
        custom = load_custom(data)
        task, questions = custom.task, custom.questions
    elif data is None:
        task = get_task(task_name)
        if task_name != "arith":
            raise InputError(f"task {task_name!r} needs --data (a question file)")
        from slm_mux.tasks.arith import generate_questions

        questions = generate_questions(split, limit or 200, seed=seed)
    else:
        task = get_task(task_name)
        if Path(data).exists() or not _HUB_ID.match(data):
            questions = load_questions(task_name, data)
        else:
            questions = _hub_questions(task, data, split)
    return task, questions[:limit] if limit is not None else questions


def _hub_questions(task: Task, dataset: str, split: Split) -> list[Question]:
    """A Hugging Face dataset's split, read through the task's file layout."""
    from slm_mux.tasks.data import load_questions

    try:
        import datasets
    except ImportError:
        raise InputError(
            f"{dataset}: no such file; to read it from the Hugging Face Hub install 'datasets'"
        ) from None
    try:
        rows = datasets.load_dataset(dataset, split=split)
    except Exception as error:  # the hub client raises many unrelated types
        raise InputError(f"{dataset}: cannot load from the Hugging Face Hub: {error}") from None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "questions.jsonl"
        path.write_text("".join(json.dumps(dict(row)) + "\n" for row in rows), encoding="utf-8")
        return load_questions(task.name, path)
