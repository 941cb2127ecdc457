"""Time the offline analysis from a store on disk: ``python bench/bench_offline.py``.

(a) 10 models x 2,000 questions (1,000 validation, 1,000 test) x 9 samples
    (180,000 samples): ``slm-mux scale`` + ``slm-mux search`` through the CLI
    entry, in-process, including the load from SQLite;
(b) the same data and the same work in the SLM-MUX authors' style: a faithful
    re-implementation, written for this bench, of the per-question Python loops
    of their package (``billwang485/SLM-MUX-ICLR``: ``engine/offline.py``
    ``OfflineMUX.simulate`` for the k-sweep, ``engine/selector.py``
    ``ModelSelector.search`` for the subset search), reading their per-model
    JSON layout. It is not their code; it follows its algorithm and data flow;
(c) 20 models x 2,000 test questions x 16 samples (640,000 samples, plus 200
    validation questions for tie-breaks): ``slm-mux eval --k 8 --trials 100``
    as a real subprocess, wall time including interpreter start.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np

from slm_mux.cli import main

ANSWERS = 4
"""Distinct answers per question; answer ``a0`` is the correct one."""


def synthetic_codes(
    rng: np.random.Generator, skill: np.ndarray, questions: int, samples: int
) -> np.ndarray:
    """Codes ``[models, questions, samples]`` (-1: no answer), right with a logistic chance."""
    difficulty = rng.normal(0.0, 1.5, size=questions)
    chance = 1 / (1 + np.exp(-(skill[:, None] - difficulty[None, :])))
    shape = (len(skill), questions, samples)
    right = rng.random(shape) < chance[..., None]
    codes = np.where(right, 0, rng.integers(1, ANSWERS, size=shape))
    return np.where(rng.random(shape) < 0.03, -1, codes)


def write_store(folder: Path, models: int, splits: dict[str, int], samples: int) -> Path:
    """A store of synthetic ``exact`` samples, imported through ``slm-mux import``."""
    rng = np.random.default_rng(models)
    skill = rng.uniform(-0.5, 1.5, size=models)
    data = folder / f"samples-{models}.jsonl"
    with data.open("w", encoding="utf-8") as out:
        for split, questions in splits.items():
            codes = synthetic_codes(rng, skill, questions, samples)
            for (m, q, s), code in np.ndenumerate(codes):
                record = {
                    "model": f"model-{m:02d}",
                    "question_id": f"{split[0]}{q:05d}",
                    "sample": s,
                    "answer": None if code < 0 else f"a{code}",
                    "reference": "a0",
                    "split": split,
                }
                out.write(json.dumps(record) + "\n")
    store = folder / f"store-{models}.db"
    with redirect_stdout(StringIO()):
        assert main(["import", str(data), "--store", str(store), "--task", "exact"]) == 0
    return store


def write_authors_layout(store: Path, folder: Path) -> dict[str, dict[str, Path]]:
    """Per split and model, a JSON file in the authors' layout (from ``slm-mux export``)."""
    exported = StringIO()
    with redirect_stdout(exported):
        assert main(["export", "--store", str(store)]) == 0
    grouped: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for line in exported.getvalue().splitlines():
        row = json.loads(line)
        question = grouped.setdefault((row["split"], row["model"]), {}).setdefault(
            row["question_id"],
            {"question": row["question_id"], "reference_answer": row["reference"], "samples": []},
        )
        question["samples"].append({"extracted_answer": row["answer"] or ""})
    paths: dict[str, dict[str, Path]] = {}
    for (split, model), questions in grouped.items():
        path = folder / f"authors-{split}-{model}.json"
        path.write_text(json.dumps({"model": model, "responses": list(questions.values())}))
        paths.setdefault(split, {})[model] = path
    return paths


# (b) The authors' approach, re-implemented: per question, per model, per trial in Python.

AuthorsData = dict[str, dict[str, tuple[str, list[str]]]]
"""model -> question -> (reference, extracted answers)."""


def authors_load(paths: dict[str, Path]) -> AuthorsData:
    """Read each model's JSON into question -> (reference, answers), as their loader does."""
    data: AuthorsData = {}
    for model, path in paths.items():
        responses = json.loads(path.read_text())["responses"]
        data[model] = {
            r["question"]: (
                r["reference_answer"].strip(),
                [s["extracted_answer"].strip() for s in r["samples"]],
            )
            for r in responses
        }
    return data


def authors_simulate(
    data: AuthorsData, models: list[str], k: int, trials: int, seed: int, accuracy: dict[str, float]
) -> float:
    """Their Monte Carlo loop: sample k per model with ``random.sample``, pooled vote, ties by
    the best supporting model's accuracy (then a random pick among the finalists)."""
    rng = random.Random(seed)
    common = set.intersection(*(set(data[m]) for m in models))
    correct = total = 0
    for _ in range(trials):
        for question in common:
            votes: list[str] = []
            supporters: dict[str, set[str]] = {}
            reference = ""
            for model in models:
                reference = reference or data[model][question][0]
                pool = data[model][question][1]
                for index in rng.sample(range(len(pool)), k=min(k, len(pool))):
                    votes.append(pool[index])
                    if pool[index]:
                        supporters.setdefault(pool[index], set()).add(model)
            counter: dict[str, int] = {}
            for vote in votes:
                if vote:
                    counter[vote] = counter.get(vote, 0) + 1
            prediction = ""
            if counter:
                top = max(counter.values())
                tied = [a for a, c in counter.items() if c == top]
                if len(tied) == 1:
                    prediction = tied[0]
                else:
                    support = {a: max(accuracy.get(m, 0.0) for m in supporters[a]) for a in tied}
                    best = max(support.values())
                    prediction = rng.choice([a for a in tied if support[a] == best])
            total += 1
            correct += bool(prediction) and prediction == reference
    return correct / total


def authors_combo_score(
    combo: tuple[str, ...], data: AuthorsData, lam: float, robust: int
) -> tuple[float, float]:
    """Their objective for one subset, by a loop over every question and model."""
    questions = set().union(*(data[m] for m in combo))
    union = contradicted = 0
    for question in questions:
        any_correct = any_sure_wrong = False
        for model in combo:
            if question not in data[model]:
                continue
            reference, answers = data[model][question]
            right = sum(a == reference for a in answers)
            any_correct |= right >= robust
            any_sure_wrong |= len(answers) > 1 and len(set(answers)) == 1 and right == 0
        if any_correct:
            union += 1
            contradicted += any_sure_wrong and len(combo) > 1
    union_acc = union / len(questions)
    return union_acc - lam * (contradicted / union if union else 0.0), union_acc


def authors_search(data: AuthorsData, lam: float, robust: int) -> dict[int, tuple[str, ...]]:
    """Every combination of every size 2..N; best by score, then union accuracy."""
    models = sorted(data)
    best: dict[int, tuple[str, ...]] = {}
    for size in range(2, len(models) + 1):
        top = (-1.0, -1.0)
        for combo in itertools.combinations(models, size):
            score = authors_combo_score(combo, data, lam, robust)
            if score > top:
                top, best[size] = score, combo
    return best


def authors_sweep_and_search(paths: dict[str, dict[str, Path]], samples: int) -> None:
    """Their k-sweep (k = 1..samples, 10 trials) on test and their search on validation."""
    test, validation = authors_load(paths["test"]), authors_load(paths["validation"])
    accuracy = {
        m: float(np.mean([a == ref for ref, answers in q.values() for a in answers]))
        for m, q in validation.items()
    }
    for k in range(1, samples + 1):
        authors_simulate(test, sorted(test), k, trials=10, seed=0, accuracy=accuracy)
    authors_search(validation, lam=1.0, robust=1)


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def quiet_main(argv: list[str]) -> None:
    with redirect_stdout(StringIO()):
        assert main(argv) == 0


def main_bench() -> None:
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = write_store(folder, 10, {"validation": 1000, "test": 1000}, 9)
        flags = ["--store", str(store), "--max-models", "10", "--trials", "10"]
        scale = timed(lambda: quiet_main(["scale", *flags, "--out", str(folder / "plots")]))
        search = timed(lambda: quiet_main(["search", *flags, "--k", "9"]))
        ours = scale + search
        rows.append(("(a) slm-mux scale + search, 10 x 2,000 x 9, from the store", ours))
        rows.append(("    of which scale (with its two PNG plots)", scale))
        rows.append(("    of which search", search))
        layout = write_authors_layout(store, folder)
        theirs = timed(lambda: authors_sweep_and_search(layout, 9))
        rows.append(("(b) authors' approach (re-implemented): k-sweep + search", theirs))
        rows.append(("    ratio (b) / (a)", theirs / ours))
        big = write_store(folder, 20, {"validation": 200, "test": 2000}, 16)
        argv = ["slm-mux", "eval", "--store", str(big), "--k", "8", "--trials", "100", "--json"]
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        rows.append(
            (
                "(c) slm-mux eval 20 x 2,000 x 16 --k 8 --trials 100 (subprocess)",
                time.perf_counter() - start,
            )
        )
    width = max(len(label) for label, _ in rows)
    print(f"{'step':<{width}}  seconds")
    for label, value in rows:
        print(f"{label:<{width}}  {value:7.3f}")


if __name__ == "__main__":
    main_bench()
