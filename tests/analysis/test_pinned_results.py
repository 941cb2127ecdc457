"""Seeded results are pinned: speed work on loading, draws and selection changes no number.

The digests are of the JSON of a seeded evaluation, search and scaling sweep
on a ragged store (4 to 7 samples per model and question, empty answers),
computed with the implementation before the offline speed work (issue 7).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pytest

from slm_mux.sample import Sample
from slm_mux.store import Store
from slm_mux.study import Study


def _digest(result: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    rng = np.random.default_rng(2024)
    samples = []
    for split, questions in (("validation", 60), ("test", 80)):
        for m in range(5):
            skill = rng.uniform(0.1, 0.5)
            for q in range(questions):
                for s in range(int(rng.integers(4, 8))):
                    right = rng.random() < skill
                    answer = "A" if right else str(rng.choice(["B", "B", "C", "D", ""]))
                    samples.append(
                        Sample(
                            model=f"model-{m}",
                            task="exact",
                            question_id=f"{split[0]}{q:03d}",
                            split=split,  # type: ignore[arg-type]
                            sample=s,
                            answer=answer or None,
                            reference="A",
                        )
                    )
    path = tmp_path_factory.mktemp("pinned") / "store.db"
    with Store(path) as db:
        db.add(samples)
    return Study.open(path)


def test_evaluation_is_pinned(study: Study) -> None:
    result = study.evaluate(k=3, trials=6, seed=11).to_json()
    assert result["methods"]["slm-mux"] == {
        "accuracy": 0.4354166666666666,
        "std": 0.05073248192452466,
    }
    assert result["methods"]["agent-forest"] == {
        "accuracy": 0.5437500000000001,
        "std": 0.0466313110116654,
    }
    assert _digest(result) == "fb9b8e001ef6faf8db0d686a58bc2b55994c8db147500779cee9eed560960e8e"


def test_search_is_pinned(study: Study) -> None:
    result = study.search(k=4, max_models=5, lam=1.0, trials=4, seed=3).to_json()
    assert result["best"]["2"]["models"] == ["model-0", "model-3"]
    assert result["best"]["2"]["test_accuracy"] == 0.4
    assert _digest(result) == "6d3578c478e33c64a2f1c40b1848c1febc9ce88b9b0b1b8cef2eff22cc1b2808"


def test_scaling_is_pinned(study: Study) -> None:
    result = study.scale(max_models=5, lam=0.5, trials=4, seed=5).to_json()
    assert result["by_samples"][2] == {
        "k": 3,
        "slm_mux": 0.409375,
        "agent_forest": 0.534375,
        "best_single_sc": 0.3125,
        "best_single_model": "model-0",
    }
    assert _digest(result) == "dd685b945f61ecea2e107e537bf0ee690dc6917ca8e6ec81542969b6be01bdd3"
