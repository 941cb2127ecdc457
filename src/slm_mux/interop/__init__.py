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
from slm_mux.interop.inspect_log import is_inspect_log, stage_inspect
from slm_mux.interop.lm_eval import is_lm_eval_log, stage_lm_eval
from slm_mux.store import Staging


def is_harness_log(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an lm-eval output (folder or file) or an inspect_ai log."""
    return is_lm_eval_log(Path(path)) or is_inspect_log(Path(path))


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
    stage = stage_lm_eval if is_lm_eval_log(where) else stage_inspect
    return stage(
        staging,
        where,
        task=task,
        split=split or DEFAULT_SPLIT,
        model=model,
        questions=questions,
    )


__all__ = [
    "HARNESS_TASKS",
    "QuestionSets",
    "is_harness_log",
    "mapped_task",
    "stage_harness_log",
]
