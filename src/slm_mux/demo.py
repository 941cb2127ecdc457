"""``slm-mux demo``: the whole pipeline, offline, on the bundled tiny models.

The package ships a pool of tiny Llama models trained on the ``arith`` task
(``slm_mux/pool_data``, made by ``scripts/train_tiny_pool.py``). The demo
collects ``samples`` answers per model on seeded validation and test questions into a
local store (beside a ``pool.yaml`` of the bundled models, ready for
``slm-mux ask``), searches the best subsets on validation, evaluates SLM-MUX and
every baseline on test, sweeps k and the number of models, writes the report
and prints the headline table. Everything is stored, so a second run only
re-reads the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from slm_mux.analysis import (
    AGENT_FOREST,
    ORACLE,
    SLM_MUX,
    Evaluation,
    Scaling,
    SearchResult,
    evaluate,
    self_consistency,
    single,
)
from slm_mux.collect import collect_pool
from slm_mux.defaults import DEFAULT_K
from slm_mux.errors import InputError
from slm_mux.outfile import write_text
from slm_mux.pool import pool_from_dict
from slm_mux.progress import SILENT, Progress
from slm_mux.sample import Split
from slm_mux.study import Study, Warn
from slm_mux.tables import markdown_table
from slm_mux.tasks.arith import generate_questions
from slm_mux.tasks.loading import QuestionSet

POOL_DIR = Path(__file__).resolve().parent / "pool_data"
"""Where the bundled models live, one folder each."""

SAMPLING_SEED = 0
"""Base seed of the bundled models' sampling (per question, see :func:`engine.sample_seed`)."""


def bundled_models(folder: Path = POOL_DIR) -> list[Path]:
    """The bundled model folders (each with ``config.json``), sorted by name."""
    found = sorted(p.parent for p in folder.glob("*/config.json"))
    if not found:
        raise InputError(f"{folder}: no bundled models; run scripts/train_tiny_pool.py")
    return found


def bundled_pool_file(
    *, k: int, temperature: float, seed: int, folder: Path = POOL_DIR
) -> dict[str, Any]:
    """The pool file (as data) of the bundled models, run in-process by transformers.

    One torch CPU thread: the tiny models' operations are too small to split
    across cores, and each model decodes in its own thread, side by side.
    """
    return {
        "defaults": {"temperature": temperature, "k": k, "max_tokens": 48, "seed": seed},
        "models": [
            {"name": path.name, "backend": "transformers", "path": str(path), "threads": 1}
            for path in bundled_models(folder)
        ],
    }


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured, and the report files it wrote.

    ``validation_accuracy`` picks the "best single model" of the headline.
    """

    k: int
    validation_accuracy: dict[str, float]
    evaluation: Evaluation
    pair: Evaluation
    search: SearchResult
    scaling: Scaling
    files: list[Path]

    def headline(self) -> str:
        """The headline table as Markdown."""
        methods, pair_methods = self.evaluation.methods, self.pair.methods
        models = self.evaluation.models
        # "Best" single models are picked by validation accuracy, never on test.
        best = max(models, key=self.validation_accuracy.__getitem__)
        pair = self.search.best[2].models
        pair_best = max(pair, key=self.validation_accuracy.__getitem__)
        rows = [
            (f"best single model, one sample ({best})", methods[single(best)]),
            (f"best single model, self-consistency ({best})", methods[self_consistency(best)]),
            (f"Agent Forest, all {len(models)} models", methods[AGENT_FOREST]),
            (f"SLM-MUX, all {len(models)} models", methods[SLM_MUX]),
            (
                f"searched pair: best single SC ({pair_best})",
                pair_methods[self_consistency(pair_best)],
            ),
            (f"searched pair: SLM-MUX ({', '.join(pair)})", pair_methods[SLM_MUX]),
            ("oracle, all models", methods[ORACLE]),
        ]
        table = markdown_table(
            ("method", "accuracy", "std"),
            [(label, f"{s.accuracy:.3f}", f"{s.std:.3f}") for label, s in rows],
            ("left", "right", "right"),
        )
        return (
            f"arith test split, {self.evaluation.questions} questions, k={self.k}, "
            f"{self.evaluation.draws_summary}\n\n{table}"
        )


def run_demo(
    out: Path,
    *,
    validation_questions: int = 100,
    test_questions: int = 200,
    samples: int = 5,
    k: int = DEFAULT_K,
    temperature: float = 0.3,
    trials: int = 10,
    seed: int = 0,
    progress: Progress = SILENT,
    models_dir: Path = POOL_DIR,
    warn: Warn,
) -> DemoResult:
    """Collect (or reuse), search, evaluate, sweep and report; see the module doc."""
    if k > samples:
        raise InputError(f"--k {k} is larger than --samples {samples}")
    store_path = out / "store.db"
    # The sampling seed stays fixed: a question's samples depend only on the question and
    # the generation settings, so runs with other --seed or sizes reuse what they share.
    pool_file = bundled_pool_file(
        k=k, temperature=temperature, seed=SAMPLING_SEED, folder=models_dir
    )
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "pool.yaml", yaml.safe_dump(pool_file, sort_keys=False))
    pool = pool_from_dict(pool_file, source=str(out / "pool.yaml"))
    counts: dict[Split, int] = {"validation": validation_questions, "test": test_questions}
    plan = {
        split: QuestionSet({"arith": generate_questions(split, count, seed=seed)})
        for split, count in counts.items()
    }
    reports = collect_pool(pool, plan, store=store_path, samples=samples, progress=progress)
    for collected in reports:
        failure = collected.first_failure()
        if failure is not None:
            raise InputError(f"collecting {collected.split} failed: {failure}")
    # The store may hold more (an earlier, larger run): evaluate only these questions.
    wanted = [q.id for question_set in plan.values() for q in question_set.by_task["arith"]]
    study = Study.open(store_path, task="arith", question_ids=wanted, warn=warn)
    n_models = len(study.test.models)
    if n_models < 2:
        raise InputError(f"{models_dir}: the demo needs at least two models")
    report = study.report(
        out,
        k=k,
        max_models=n_models,
        lam=1.0,
        trials=trials,
        seed=seed,
        title="SLM-MUX demo: bundled tiny models on arith",
    )
    assert report.search is not None and report.scaling is not None  # validation is collected
    pair = evaluate(
        study.test.subset(report.search.best[2].models),
        k=k,
        trials=trials,
        seed=seed,
        validation_accuracy=study.validation_accuracy,
    )
    return DemoResult(
        k,
        study.validation_accuracy or {},
        report.evaluation,
        pair,
        report.search,
        report.scaling,
        report.files,
    )
