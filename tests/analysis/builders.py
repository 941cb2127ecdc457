"""Sample builders shared by the analysis tests (task ``exact``: answers equal as strings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from slm_mux.sample import Sample, Split

Table = Mapping[str, Mapping[str, Sequence[str | None]]]
"""``table[model][question_id]``: the model's answers to the question, in sample order."""


def samples_from_table(
    table: Table, references: dict[str, str], *, split: Split = "test"
) -> list[Sample]:
    """One Sample per answer in ``table``."""
    return [
        Sample(
            model=model,
            task="exact",
            question_id=question_id,
            split=split,
            sample=index,
            answer=answer,
            reference=references[question_id],
        )
        for model, rows in table.items()
        for question_id, answers in rows.items()
        for index, answer in enumerate(answers)
    ]


def random_table(
    seed: int,
    *,
    models: int,
    questions: int,
    samples: int,
    ragged: bool = False,
) -> tuple[dict[str, dict[str, list[str | None]]], dict[str, str]]:
    """Answers from {A (correct), B, C, None} with a random skill per model.

    With ``ragged`` some models record fewer samples of some questions (at least one).
    """
    rng = np.random.default_rng(seed)
    references = {f"q{q:02d}": "A" for q in range(questions)}
    table: dict[str, dict[str, list[str | None]]] = {}
    for m in range(models):
        skill = rng.uniform(0.2, 0.8)
        rows: dict[str, list[str | None]] = {}
        for question_id in references:
            count = int(rng.integers(1, samples + 1)) if ragged else samples
            draws = rng.random(count)
            wrong = rng.choice(np.array(["B", "C", ""], dtype=object), size=count)
            rows[question_id] = [
                "A" if draw < skill else (str(w) or None)
                for draw, w in zip(draws, wrong, strict=True)
            ]
        table[f"m{m}"] = rows
    return table, references
