"""The real harnesses as clients of ``slm-mux serve``: every request they send is accepted,
and their scores agree with slm-mux's grader on the same replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slm_mux.tasks import get_task

from .conftest import QUESTIONS
from .harness_runs import run_inspect, run_lm_eval, write_lm_eval_task


def test_lm_eval_scores_slm_mux_as_slm_mux_grades_its_replies(
    served: str, harness_dir: Path, questions_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (the lm-eval extra)")
    tasks = write_lm_eval_task(tmp_path / "tasks", questions_file, repeats=1, fewshot=True).parent
    results = run_lm_eval(
        served,
        "slm-mux",
        tasks,
        tmp_path / "out",
        num_fewshot=1,
        fewshot_as_multiturn=True,
        system_instruction="Compute.",
    )
    samples: list[dict[str, Any]] = results["samples"]["arith_local"]
    # A system message and a one-shot history came with every request.
    sent = json.loads(samples[0]["arguments"]["gen_args_0"]["arg_0"][0])
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    arith = get_task("arith")
    graded = [arith.grade(arith.extract(s["resps"][0][0]), s["target"]) for s in samples]
    assert len(samples) == QUESTIONS
    assert all(s["resps"][0][0] for s in samples)  # every request answered
    assert results["results"]["arith_local"]["exact_match,maj"] == sum(graded) / len(graded)


def test_inspect_scores_slm_mux_as_slm_mux_grades_its_replies(
    served: str, questions_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("inspect_ai", reason="inspect_ai is not installed (the inspect extra)")
    log = run_inspect(served, "slm-mux", questions_file, tmp_path, epochs=1)
    assert log.status == "success"
    arith = get_task("arith")
    samples = log.samples or []
    graded = [arith.grade(arith.extract(s.output.completion), str(s.target)) for s in samples]
    assert len(samples) == QUESTIONS
    scored = [s.scores["match"].value == "C" for s in samples]
    assert scored == graded
