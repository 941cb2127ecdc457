"""``slm-mux demo``: the whole pipeline, offline, on the bundled tiny models.

The package ships a pool of tiny Llama models trained on the ``arith`` task
(``slm_mux/pool_data``, made by ``scripts/train_tiny_pool.py``). The demo
collects k samples per model on seeded validation and test questions into a
local store (beside a ``pool.yaml`` of the bundled models, ready for
``slm-mux ask``), searches the best subsets on validation, evaluates SLM-MUX and
every baseline on test, sweeps k and the number of models, writes the report
and prints the headline table. Everything is stored, so a second run only
re-reads the store.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from slm_mux.analysis import Evaluation, Scaling, SearchResult, evaluate
from slm_mux.collect import collect
from slm_mux.errors import InputError
from slm_mux.pool import members_of, pool_from_dict
from slm_mux.store import Store
from slm_mux.study import Study, Warn
from slm_mux.tasks import get_task
from slm_mux.tasks.arith import generate_questions

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
    """The pool file (as data) of the bundled models, run in-process by transformers."""
    return {
        "defaults": {"temperature": temperature, "k": k, "max_tokens": 48, "seed": seed},
        "models": [
            {"name": path.name, "backend": "transformers", "path": str(path)}
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
        methods = self.evaluation.methods
        models = [name.removeprefix("sc:") for name in methods if name.startswith("sc:")]
        # "Best" single models are picked by validation accuracy, never on test.
        best = max(models, key=self.validation_accuracy.__getitem__)
        pair = self.search.best[2].models
        pair_best = f"sc:{max(pair, key=self.validation_accuracy.__getitem__)}"
        pair_models = ", ".join(pair)
        rows = [
            (f"best single model, one sample ({best})", methods[f"single:{best}"]),
            (f"best single model, self-consistency ({best})", methods[f"sc:{best}"]),
            (f"Agent Forest, all {len(models)} models", methods["agent-forest"]),
            (f"SLM-MUX, all {len(models)} models", methods["slm-mux"]),
            (f"searched pair: best single SC ({pair_best[3:]})", self.pair.methods[pair_best]),
            (f"searched pair: SLM-MUX ({pair_models})", self.pair.methods["slm-mux"]),
            ("oracle, all models", methods["oracle"]),
        ]
        lines = [
            f"arith test split, {self.evaluation.questions} questions, k={self.k}, "
            f"{self.evaluation.draws_summary}",
            "",
            "| method | accuracy | std |",
            "|---|---:|---:|",
            *(f"| {label} | {s.accuracy:.3f} | {s.std:.3f} |" for label, s in rows),
        ]
        return "\n".join(lines) + "\n"


def run_demo(
    out: Path,
    *,
    validation_questions: int = 100,
    test_questions: int = 200,
    samples: int = 5,
    k: int = 3,
    temperature: float = 0.3,
    trials: int = 10,
    seed: int = 0,
    show_progress: bool = True,
    models_dir: Path = POOL_DIR,
    warn: Warn,
    log: TextIO,
) -> DemoResult:
    """Collect (or reuse), search, evaluate, sweep and report; see the module doc."""
    if k > samples:
        raise InputError(f"--k {k} is larger than --samples {samples}")
    task = get_task("arith")
    store_path = out / "store.db"
    # The sampling seed stays fixed: a question's samples depend only on the question and
    # the generation settings, so runs with other --seed or sizes reuse what they share.
    pool_file = bundled_pool_file(
        k=k, temperature=temperature, seed=SAMPLING_SEED, folder=models_dir
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "pool.yaml").write_text(yaml.safe_dump(pool_file, sort_keys=False), encoding="utf-8")
    pool = pool_from_dict(pool_file, source=str(out / "pool.yaml"))
    members = members_of(pool, k=samples)
    questions = {
        "validation": generate_questions("validation", validation_questions, seed=seed),
        "test": generate_questions("test", test_questions, seed=seed),
    }

    async def gather() -> None:
        try:
            with Store(store_path) as store:
                for split, items in questions.items():
                    print(f"collecting {split}: {len(items)} questions", file=log)
                    report = await collect(
                        members,
                        task,
                        items,
                        split=split,  # type: ignore[arg-type]
                        store=store,
                        show_progress=show_progress,
                    )
                    if not report.complete:
                        raise InputError(f"collection of {split} failed; see {store_path}")
        finally:
            await asyncio.gather(*(m.backend.aclose() for m in members))

    asyncio.run(gather())
    # The store may hold more (an earlier, larger run): evaluate only these questions.
    wanted = [q.id for items in questions.values() for q in items]
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
