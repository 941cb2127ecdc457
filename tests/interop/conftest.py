"""Logs written by the real harnesses against ``slm-mux serve`` on two bundled tiny models,
once per session (each fixture skips when its harness is not installed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slm_mux.tasks.arith import generate_questions

from .harness_runs import (
    run_inspect,
    run_lm_eval,
    serving,
    write_lm_eval_task,
    write_pool,
    write_questions,
)

MODELS = ("tiny-add", "tiny-mul")
QUESTIONS = 4
REPEATS = 2


@pytest.fixture(scope="session")
def harness_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("harness")


@pytest.fixture(scope="session")
def questions_file(harness_dir: Path) -> Path:
    return write_questions(harness_dir / "arith.jsonl", generate_questions("test", QUESTIONS))


@pytest.fixture(scope="session")
def served(harness_dir: Path) -> Iterator[str]:
    """The ``/v1`` URL of ``slm-mux serve`` over :data:`MODELS`."""
    pytest.importorskip("transformers")
    with serving(write_pool(harness_dir / "pool.yaml", MODELS)) as url:
        yield url


@pytest.fixture(scope="session")
def lm_eval_runs(harness_dir: Path, served: str, questions_file: Path) -> dict[str, Any]:
    """lm-eval's results per model; its output folder is ``harness_dir / "lm-eval"``."""
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (the lm-eval extra)")
    tasks = write_lm_eval_task(harness_dir / "tasks", questions_file, repeats=REPEATS).parent
    return {m: run_lm_eval(served, m, tasks, harness_dir / "lm-eval") for m in MODELS}


@pytest.fixture(scope="session")
def inspect_logs(harness_dir: Path, served: str, questions_file: Path) -> dict[str, Path]:
    """An inspect_ai log per model: tiny-add's as ``.eval``, tiny-mul's as ``.json``."""
    pytest.importorskip("inspect_ai", reason="inspect_ai is not installed (the inspect extra)")
    formats = dict(zip(MODELS, ("eval", "json"), strict=True))
    return {
        model: Path(
            run_inspect(
                served,
                model,
                questions_file,
                harness_dir / "inspect",
                epochs=REPEATS,
                log_format=formats[model],
            ).location
        )
        for model in MODELS
    }
