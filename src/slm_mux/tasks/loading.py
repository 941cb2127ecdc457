"""The questions a collection asks: from a file, a Hugging Face dataset, or generated.

:func:`load_question_set` turns a task name and a ``--data`` argument into a
:class:`QuestionSet`, the questions grouped by the task that prompts and
grades them (several for a ``custom`` file with a ``type`` per line).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from slm_mux.errors import InputError
from slm_mux.sample import Split
from slm_mux.tasks import Question, get_task, task_names, unknown_task

CUSTOM = "custom"
"""The task name of custom question files, graded per line by the line's ``type``."""

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def question_set_names() -> list[str]:
    """Every name :func:`load_question_set` accepts: the built-in tasks and ``custom``."""
    return sorted([*task_names(), CUSTOM])


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (from 1) of ``count``: the questions whose id hashes to it.

    The share of a question depends on its id only (BLAKE2b, the same in every
    process), so the shards ``1/N`` .. ``N/N`` of any list of questions cover
    it, disjointly, whatever its order.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` with ``1 <= I <= N``; raises :class:`InputError` naming the text."""
        index, slash, count = text.partition("/")
        if not (slash and index.isdecimal() and count.isdecimal()):
            raise InputError(f"expected a shard I/N such as 1/4, got {text!r}")
        shard = cls(int(index), int(count))
        if shard.count < 1:
            raise InputError(f"shard {text!r}: N must be at least 1")
        if not 1 <= shard.index <= shard.count:
            raise InputError(f"shard {text!r}: I must be from 1 to N (I counts from 1)")
        return shard

    def takes(self, question_id: str) -> bool:
        """Whether the question with id ``question_id`` belongs to this shard."""
        from slm_mux.analysis.draws import stable_hash

        return stable_hash(question_id) % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class QuestionSet:
    """Questions grouped by the name of the task that prompts and grades them, in file order."""

    by_task: dict[str, list[Question]]

    @property
    def task_names(self) -> list[str]:
        """The tasks of the set, in order of first appearance."""
        return list(self.by_task)

    def __len__(self) -> int:
        return sum(len(questions) for questions in self.by_task.values())

    def share(self, shard: Shard) -> QuestionSet:
        """The questions of ``shard``, in the same order (a task may be left with none)."""
        return QuestionSet(
            {
                task: [question for question in questions if shard.takes(question.id)]
                for task, questions in self.by_task.items()
            }
        )


def load_question_set(
    task_name: str, data: str | None, *, split: Split, limit: int | None = None, seed: int = 0
) -> QuestionSet:
    """The questions to collect for ``task_name``.

    ``data`` is a JSON/JSONL file in the task's layout, or (when no such file
    exists) a Hugging Face dataset id such as ``openai/gsm8k``, which needs the
    ``datasets`` package and network access. Task ``custom`` reads a custom
    JSONL file whose lines each name their grader in ``type``. The ``arith``
    task generates ``limit`` (default 200) seeded questions when ``data`` is
    omitted. ``limit`` keeps the first questions.
    """
    if task_name == CUSTOM:
        if data is None:
            raise InputError("task 'custom' needs --data (a custom JSONL file)")
        from slm_mux.tasks.custom import load_custom

        typed = load_custom(data)[:limit]
        grouped: dict[str, list[Question]] = {}
        for kind, question in typed:
            grouped.setdefault(kind, []).append(question)
        return QuestionSet(grouped)
    if task_name not in task_names():
        raise unknown_task(task_name, question_set_names())
    if data is None:
        if task_name != "arith":
            raise InputError(f"task {task_name!r} needs --data (a question file)")
        from slm_mux.tasks.arith import generate_questions

        return QuestionSet({task_name: generate_questions(split, limit or 200, seed=seed)})
    from slm_mux.tasks.data import load_questions

    if Path(data).exists() or not _HUB_ID.match(data):
        questions = load_questions(task_name, data)
    else:
        questions = _hub_questions(task_name, data, split)
    return QuestionSet({task_name: questions[:limit]})


def _hub_questions(task_name: str, dataset: str, split: Split) -> list[Question]:
    """A Hugging Face dataset's split, read through the task's file layout."""
    from slm_mux.tasks.data import load_questions

    get_task(task_name)
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
        return load_questions(task_name, path)
