"""Time the offline analysis on synthetic data: ``python bench/bench_offline.py``.

Case 1: 5 models x 500 questions x 9 samples: building the arrays from Sample
records, ``evaluate`` for every k = 1..9 (10 trials) and the search for sizes 1..5.
Case 2: 20 models x 2,000 questions x 16 samples: ``evaluate`` at k=8 and k=16
(100 trials) and the exact search for every size 1..20.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from slm_mux.analysis import SampleArrays, evaluate, search
from slm_mux.sample import Sample
from slm_mux.selection import NO_VOTE

T = TypeVar("T")
ANSWERS = 4
"""Distinct answers per question; answer 0 is the correct one."""


def synthetic_codes(
    rng: np.random.Generator, skill: np.ndarray, questions: int, samples: int
) -> np.ndarray:
    """Codes ``[models, questions, samples]``, right with a per-model, per-question chance."""
    difficulty = rng.normal(0.0, 1.5, size=questions)
    chance = 1 / (1 + np.exp(-(skill[:, None] - difficulty[None, :])))
    shape = (len(skill), questions, samples)
    right = rng.random(shape) < chance[..., None]
    wrong = rng.integers(1, ANSWERS, size=shape)
    codes = np.where(right, 0, wrong)
    return np.where(rng.random(shape) < 0.03, NO_VOTE, codes)


def synthetic_arrays(codes: np.ndarray, split: str) -> SampleArrays:
    """SampleArrays straight from codes (every model records every sample)."""
    n_models, n_questions, _ = codes.shape
    code_correct = np.zeros((n_questions, ANSWERS), dtype=np.bool_)
    code_correct[:, 0] = True
    return SampleArrays(
        split=split,
        models=[f"model-{m:02d}" for m in range(n_models)],
        question_ids=[f"q{q:05d}" for q in range(n_questions)],
        tasks=["exact"] * n_questions,
        codes=codes.astype(np.int64),
        recorded=np.full(codes.shape[:2], codes.shape[2], dtype=np.int64),
        code_correct=code_correct,
        answers=[[f"answer {c}" for c in range(ANSWERS)]] * n_questions,
    )


def synthetic_samples(codes: np.ndarray, split: str) -> list[Sample]:
    """Sample records for ``codes`` with the exact task (answer ``a0`` is right)."""
    return [
        Sample(
            model=f"model-{m:02d}",
            task="exact",
            question_id=f"q{q:05d}",
            split="test" if split == "test" else "validation",
            sample=s,
            answer=None if code == NO_VOTE else f"a{code}",
            reference="a0",
        )
        for (m, q, s), code in np.ndenumerate(codes)
    ]


def timed(label: str, rows: list[tuple[str, float]], run: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = run()
    rows.append((label, time.perf_counter() - start))
    return result


def case_small(rows: list[tuple[str, float]]) -> None:
    rng = np.random.default_rng(1)
    skill = rng.uniform(-0.5, 1.5, size=5)
    samples = synthetic_samples(synthetic_codes(rng, skill, 500, 9), "test")
    validation = synthetic_arrays(synthetic_codes(rng, skill, 500, 9), "validation")
    test = timed(
        "case 1: SampleArrays.from_samples (22,500 samples, exact task)",
        rows,
        lambda: SampleArrays.from_samples(samples, split="test"),
    )
    start = time.perf_counter()
    timed(
        "case 1: evaluate k=1..9, 10 trials",
        rows,
        lambda: [evaluate(test, k=k, trials=10, seed=0) for k in range(1, 10)],
    )
    timed("case 1: search sizes 1..5 (k=9)", rows, lambda: search(validation, k=9, max_models=5))
    rows.append(("case 1: evaluate + search", time.perf_counter() - start))


def case_large(rows: list[tuple[str, float]]) -> None:
    rng = np.random.default_rng(2)
    skill = rng.uniform(-0.5, 1.5, size=20)
    test = synthetic_arrays(synthetic_codes(rng, skill, 2000, 16), "test")
    validation = synthetic_arrays(synthetic_codes(rng, skill, 2000, 16), "validation")
    start = time.perf_counter()
    timed("case 2: evaluate k=8, 100 trials", rows, lambda: evaluate(test, k=8, trials=100, seed=0))
    timed(
        "case 2: evaluate k=16, 100 trials", rows, lambda: evaluate(test, k=16, trials=100, seed=0)
    )
    found = timed(
        "case 2: exact search sizes 1..20 (k=16)",
        rows,
        lambda: search(validation, k=16, max_models=20),
    )
    assert found.exact
    rows.append(("case 2: total", time.perf_counter() - start))


def main() -> None:
    rows: list[tuple[str, float]] = []
    case_small(rows)
    case_large(rows)
    width = max(len(label) for label, _ in rows)
    print(f"{'step':<{width}}  seconds")
    for label, seconds in rows:
        print(f"{label:<{width}}  {seconds:7.3f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    print(f"peak RSS: {peak * scale / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
