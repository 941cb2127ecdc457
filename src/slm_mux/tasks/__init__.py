"""Built-in tasks, looked up by name."""

from __future__ import annotations

from slm_mux.errors import InputError
from slm_mux.tasks.base import Message, Question, Task
from slm_mux.tasks.exact import ExactTask

_TASKS: dict[str, type[Task]] = {"exact": ExactTask}


def task_names() -> list[str]:
    """Names of the built-in tasks."""
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The built-in task called ``name``."""
    try:
        return _TASKS[name]()
    except KeyError:
        raise InputError(f"unknown task {name!r}; choose from {', '.join(task_names())}") from None


__all__ = ["Message", "Question", "Task", "get_task", "task_names"]
