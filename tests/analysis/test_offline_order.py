"""Seeded results do not depend on model order or on what is evaluated alongside.

Also: draws are uniform, the store's array read path equals the in-memory one,
and several tasks load together, each question graded by its own task.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations, permutations
from pathlib import Path

import numpy as np
import pytest

from slm_mux.analysis import SLM_MUX, SampleArrays, evaluate, self_consistency
from slm_mux.analysis.draws import bases, draw, slot_keys
from slm_mux.cli import main
from slm_mux.errors import InputError
from slm_mux.sample import Sample
from slm_mux.store import Store
from slm_mux.study import Study, stored_validation_accuracy

from .builders import random_table, samples_from_table

MODELS = ["good", "mid", "bad"]


def _samples(ragged: bool = False) -> list[Sample]:
    samples = []
    for split, seed in (("validation", 30), ("test", 31)):
        table, references = random_table(seed, models=3, questions=30, samples=6, ragged=ragged)
        renamed = {name: table[f"m{m}"] for m, name in enumerate(MODELS)}
        samples += samples_from_table(renamed, references, split=split)  # type: ignore[arg-type]
    return samples


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("order") / "store.db"
    with Store(path) as db:
        db.add(_samples())
    return path


def test_eval_json_is_the_same_for_every_order_of_models(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = set()
    for order in [None, *permutations(MODELS)]:
        argv = ["eval", "--store", str(store), "--k", "2", "--trials", "7", "--json"]
        assert main(argv if order is None else [*argv, "--models", ",".join(order)]) == 0
        outputs.add(capsys.readouterr().out)
    assert len(outputs) == 1
    methods = json.loads(outputs.pop())["methods"]
    assert list(methods)[2:5] == ["single:bad", "single:good", "single:mid"]


def test_a_models_draws_do_not_depend_on_the_others_or_the_questions(store: Path) -> None:
    study = Study.open(store)
    full = evaluate(study.test, k=2, trials=9, seed=4).methods
    for size in (1, 2):
        for subset in combinations(MODELS, size):
            alone = evaluate(study.test.subset(subset), k=2, trials=9, seed=4).methods
            for model in subset:
                assert alone[self_consistency(model)] == full[self_consistency(model)]
    # Loading fewer questions leaves the others' draws alone: per-question sc agrees.
    half = study.test.question_ids[::2]
    fewer = Study.open(store, question_ids=half)
    assert fewer.test.question_ids == half
    for model in MODELS:
        both = [evaluate(s.test.subset([model]), k=2, trials=1, seed=4) for s in (study, fewer)]
        chosen = {o.question_id: o.answer for o in both[0].first_trial}
        assert {o.question_id: o.answer for o in both[1].first_trial} == {
            q: chosen[q] for q in half
        }


def test_draws_are_uniform_over_subsets_and_seeded() -> None:
    # 5 recorded slots, k=2: each of the 10 subsets should come up 1/10 of the time.
    base = bases(["m"], [f"q{q}" for q in range(400)])
    recorded = np.full(base.shape, 5, dtype=np.int64)
    counts: Counter[tuple[int, ...]] = Counter()
    for trial in range(50):
        drawn = draw(slot_keys(base, seed=7, trial=trial, width=5), recorded, 2)
        counts.update(tuple(row) for row in drawn.reshape(-1, 2).tolist())
    total = sum(counts.values())
    assert set(counts) == set(combinations(range(5), 2))
    # 20,000 draws: the binomial std of a 1/10 share is 0.0021; allow 4 std.
    assert all(abs(n / total - 0.1) < 0.0085 for n in counts.values()), counts
    again = draw(slot_keys(base, seed=7, trial=0, width=5), recorded, 2)
    other = draw(slot_keys(base, seed=8, trial=0, width=5), recorded, 2)
    np.testing.assert_array_equal(
        again, draw(slot_keys(base, seed=7, trial=0, width=5), recorded, 2)
    )
    assert (again != other).any()


def test_unrecorded_slots_are_never_drawn() -> None:
    base = bases(["a", "b"], ["q"])
    recorded = np.array([[3], [5]], dtype=np.int64)
    for trial in range(200):
        drawn = draw(slot_keys(base, seed=0, trial=trial, width=5), recorded, 3)
        assert drawn[0, 0].tolist() == [0, 1, 2]
        assert (drawn[1, 0] < 5).all() and len(set(drawn[1, 0].tolist())) == 3


def test_store_read_path_equals_the_in_memory_arrays(tmp_path: Path) -> None:
    samples = _samples(ragged=True)
    store = tmp_path / "ragged.db"
    with Store(store) as db:
        db.add(samples)
    with Store(store, create=False) as db:
        columns = db.sample_columns(("test", "validation"), ["exact"])
    for split in ("test", "validation"):
        memory = SampleArrays.from_samples(samples, split=split)
        stored = SampleArrays.from_columns(columns[split])
        assert stored.models == memory.models and stored.question_ids == memory.question_ids
        np.testing.assert_array_equal(stored.codes, memory.codes)
        np.testing.assert_array_equal(stored.recorded, memory.recorded)
        np.testing.assert_array_equal(stored.code_correct, memory.code_correct)
        assert stored.answers == memory.answers


def _mixed(path: Path) -> None:
    """One custom set, two graders: math questions equal as fractions, exact ones as text."""
    rows = [
        ("math", "m1", ["1/2", "\\frac{1}{2}", "3"], ["3", "3", "3"], "0.5"),
        ("math", "m2", ["2", "2", "2"], ["4", "2", "4"], "2"),
        ("exact", "e1", ["1/2", "0.5", "0.5"], ["x", "x", "y"], "x"),
    ]
    samples = [
        Sample(
            model=model,
            task=task,
            question_id=qid,
            split=split,
            sample=s,
            answer=answer,
            reference=reference,
        )
        for task, qid, a_answers, b_answers, reference in rows
        for model, answers in (("a", a_answers), ("b", b_answers))
        for split in ("validation", "test")
        for s, answer in enumerate(answers)
    ]
    with Store(path) as db:
        db.add(samples)


def test_several_tasks_load_together_each_question_graded_by_its_own(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    _mixed(path)
    study = Study.open(path, task="math,exact")
    assert study.task == "exact,math"
    assert study.test.question_ids == ["e1", "m1", "m2"]
    assert study.test.tasks == ["exact", "math", "math"]
    result = evaluate(study.test, k=3, trials=1, seed=0)
    # a: m1 (1/2 = \frac{1}{2}, 2 of 3 votes, right), m2 right, e1 "0.5" wrong.
    assert result.methods[self_consistency("a")].accuracy == pytest.approx(2 / 3)
    # b: e1 right, m1 wrong, m2 "4" wrong.
    assert result.methods[self_consistency("b")].accuracy == pytest.approx(1 / 3)
    # m1: b is 3/3 sure of "3"; m2: a is 3/3 right; e1: a and b tie at 2/3 and a,
    # better on validation (5/9 against 3/9), answers "0.5": wrong.
    assert result.methods[SLM_MUX].accuracy == pytest.approx(1 / 3)
    same = Study.open(path, task=["exact", "math"])
    np.testing.assert_array_equal(same.test.codes, study.test.codes)
    assert stored_validation_accuracy(path, task="math,exact") == pytest.approx(
        {"a": 5 / 9, "b": 3 / 9}
    )


def test_an_unknown_task_in_a_list_is_named(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    _mixed(path)
    with pytest.raises(InputError) as raised:
        Study.open(path, task="math,gsm8k")
    assert str(raised.value) == f"{path} has no samples of task 'gsm8k' (has: exact, math)"
