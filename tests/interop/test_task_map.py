"""The harness task → slm-mux task map, and references taken from harness targets."""

from __future__ import annotations

import pytest

from slm_mux.errors import InputError
from slm_mux.interop import mapped_task
from slm_mux.interop.common import reference_of


@pytest.mark.parametrize(
    ("harness_task", "task"),
    [
        ("gsm8k_cot_self_consistency", "gsm8k"),
        ("inspect_evals/gsm8k", "gsm8k"),
        ("gpqa_diamond_cot_zeroshot", "gpqa"),
        ("hendrycks_math_algebra", "math"),
        ("minerva_math500", "math"),
    ],
)
def test_known_tasks_map_to_their_grader(harness_task: str, task: str) -> None:
    assert mapped_task(harness_task, None, "f") == task


def test_given_task_wins_and_an_unknown_one_says_which_flag() -> None:
    assert mapped_task("gsm8k", "exact", "f") == "exact"
    with pytest.raises(InputError, match=r"^f: task 'triviaqa' has no slm-mux grader.*--task"):
        mapped_task("triviaqa", None, "f")


def test_references_are_what_the_grader_extracts_from_the_target() -> None:
    assert reference_of("gsm8k", "She pays 3*4=12.\n#### 12") == "12"
    assert reference_of("math", "\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert reference_of("exact", " Paris ") == "Paris"
