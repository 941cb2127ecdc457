"""Other evaluation harnesses' logs read into a store: lm-evaluation-harness output
folders (:mod:`slm_mux.interop.lm_eval`) and inspect_ai logs
(:mod:`slm_mux.interop.inspect_log`).

Either gives one stored sample per generation, its answer extracted by slm-mux's own
grader (so every model is graded one way), the harness's target as the reference and
the question text; the harness's task picks the grader (:data:`HARNESS_TASKS`) unless
``--task`` names one. :class:`QuestionSets` checks that every model answered the same
questions.
"""

from __future__ import annotations

import os
from pathlib import Path

from slm_mux.interop.common import DEFAULT_SPLIT, HARNESS_TASKS, QuestionSets, mapped_task
from slm_mux.interop.inspect_log import inspect_logs, stage_inspect
from slm_mux.interop.lm_eval import is_lm_eval_log, stage_lm_eval
from slm_mux.store import Staging


def is_harness_log(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an lm-eval output (folder or file), an inspect_ai log or a
    folder of them."""
    return is_lm_eval_log(Path(path)) or bool(inspect_logs(Path(path)))


def stage_harness_log(
    staging: Staging,
    path: str | os.PathLike[str],
    *,
    task: str | None,
    split: str | None,
    model: str | None,
    questions: QuestionSets,
) -> int:
    """Stage a harness log (:func:`is_harness_log`); returns the number of samples read.

    ``split`` defaults to ``test``; ``task`` and ``model`` override the log's.
    """
    where = Path(path)
    split = split or DEFAULT_SPLIT
    if is_lm_eval_log(where):
        return stage_lm_eval(
            staging, where, task=task, split=split, model=model, questions=questions
        )
    read = 0
    for log in inspect_logs(where):
        read += stage_inspect(
            staging, log, task=task, split=split, model=model, questions=questions
        )
    return read


__all__ = [
    "HARNESS_TASKS",
    "QuestionSets",
    "is_harness_log",
    "mapped_task",
    "stage_harness_log",
]
