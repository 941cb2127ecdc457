"""Built-in tasks, looked up by name.

To add a task, write a :class:`Task` subclass with a ``name`` and a
constructor that needs no arguments, and add it to ``_TASKS``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache, lru_cache

from slm_mux.errors import InputError
from slm_mux.tasks.arith import ArithTask
from slm_mux.tasks.base import Message, Question, Task
from slm_mux.tasks.exact import ExactTask
from slm_mux.tasks.gpqa import GpqaTask
from slm_mux.tasks.gsm8k import Gsm8kTask
from slm_mux.tasks.math import MathTask

_TASKS: dict[str, type[Task]] = {
    "arith": ArithTask,
    "exact": ExactTask,
    "gpqa": GpqaTask,
    "gsm8k": Gsm8kTask,
    "math": MathTask,
}


def task_names() -> list[str]:
    """Names of the built-in tasks."""
    return sorted(_TASKS)


def unknown_task(name: str, choices: Iterable[str]) -> InputError:
    """The error for a task name that is not one of ``choices``."""
    return InputError(f"unknown task {name!r}; choose from {', '.join(choices)}")


@cache
def get_task(name: str) -> Task:
    """The built-in task called ``name`` (one shared instance: tasks hold no state)."""
    try:
        return _TASKS[name]()
    except KeyError:
        raise unknown_task(name, task_names()) from None


@lru_cache(maxsize=1 << 16)
def graded(task: str, answer: str | None, reference: str) -> bool:
    """``get_task(task).grade(answer, reference)``, memoized: the same strings recur a lot."""
    return get_task(task).grade(answer, reference)


__all__ = ["Message", "Question", "Task", "get_task", "graded", "task_names", "unknown_task"]
