"""The store's one-query read path keeps every answer exactly, with its sample number."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slm_mux.analysis import SampleArrays
from slm_mux.sample import Sample
from slm_mux.store import Store

AWKWARD = ["a,b", '"q"', "x\ny", "\\frac{1}{2}", "naïve ∑", "", None, "null", "[1]"]


def test_awkward_answers_come_back_exactly_and_in_sample_order(tmp_path: Path) -> None:
    # Samples are added out of order; each answer appears under a shuffled sample number.
    rng = np.random.default_rng(3)
    samples = [
        Sample(
            model=model,
            task="exact",
            question_id=question_id,
            split=split,
            sample=int(number),
            answer=AWKWARD[(int(number) + shift) % len(AWKWARD)],
            reference="x\ny",
        )
        for split in ("validation", "test")
        for shift, (model, question_id) in enumerate(
            [("m1", "q,1"), ("m0", "q2"), ("m1", "q2"), ("m0", "q,1")]
        )
        for number in rng.permutation(len(AWKWARD))
    ]
    store = tmp_path / "awkward.db"
    with Store(store) as db:
        db.add(samples)
        columns = db.sample_columns(("test", "validation"))
    for split in ("test", "validation"):
        got = columns[split]
        answers = {
            (got.models[m], got.question_ids[got.pair_question[p]], int(s)): got.answers[p]
            for m, p, s in zip(got.model, got.pair, got.sample, strict=True)
        }
        assert answers == {
            (s.model, s.question_id, s.sample): s.answer for s in samples if s.split == split
        }
        stored = SampleArrays.from_columns(got)
        memory = SampleArrays.from_samples(samples, split=split)
        np.testing.assert_array_equal(stored.codes, memory.codes)
        assert stored.answers == memory.answers
        assert stored.code_correct.any(axis=1).all()  # "x\ny" is right on both questions


def test_only_the_asked_splits_and_tasks_are_read(tmp_path: Path) -> None:
    samples = [
        Sample(
            model="m",
            task=task,
            question_id="q",
            split=split,
            sample=0,
            answer="1",
            reference="1",
        )
        for task in ("exact", "gsm8k")
        for split in ("validation", "test")
    ]
    with Store(tmp_path / "two.db") as db:
        db.add(samples)
        columns = db.sample_columns(("validation",), ["gsm8k"])
    assert list(columns) == ["validation"]
    assert columns["validation"].tasks == ["gsm8k"]
    assert len(columns["validation"].sample) == 1
