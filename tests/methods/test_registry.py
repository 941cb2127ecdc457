"""The discussion methods' cost formulas, settings and the shared vote helpers."""

from __future__ import annotations

from typing import Any

import pytest

from slm_mux.methods import (
    METHODS,
    Call,
    DebateSettings,
    MAVSettings,
    MoASettings,
    call_all,
    first_round_majority,
    vote,
)
from slm_mux.tasks import get_task
from slm_mux.tasks.base import Question

from .scripted import ScriptedCaller, says

QUESTION = Question(id="q1", text="2+3", reference="5")
SETTINGS: list[tuple[str, Any]] = [
    ("debate", DebateSettings()),
    ("debate", DebateSettings(rounds=1)),
    ("debate", DebateSettings(rounds=4)),
    ("moa", MoASettings()),
    ("moa", MoASettings(layers=2)),
    ("moa", MoASettings(layers=5, aggregator="m1")),
    ("mav", MAVSettings()),
    ("mav", MAVSettings(candidates=1, aspects=("steps",))),
    ("mav", MAVSettings(candidates=3, aspects=("steps", "final-answer"), generator="m1")),
]


def test_the_discussion_methods_in_table_order() -> None:
    assert list(METHODS) == ["debate", "moa", "mav"]
    assert {spec.name for spec in METHODS.values()} == set(METHODS)
    assert [spec.settings for spec in METHODS.values()] == [
        DebateSettings,
        MoASettings,
        MAVSettings,
    ]


@pytest.mark.parametrize("models", [2, 3, 5])
@pytest.mark.parametrize(("name", "settings"), SETTINGS)
async def test_counted_calls_equal_the_cost_formula(name: str, settings: Any, models: int) -> None:
    names = [f"m{i}" for i in range(models)]
    caller = ScriptedCaller({m: says("5") for m in names})
    spec = METHODS[name]
    assert spec.run is not None
    await spec.run(QUESTION, get_task("arith"), names, caller, settings)
    assert len(caller.calls) == spec.calls_per_question(models, settings)


def test_cost_formulas_at_the_defaults() -> None:
    assert METHODS["debate"].calls_per_question(3, DebateSettings()) == 6
    assert METHODS["moa"].calls_per_question(3, MoASettings()) == 7
    assert METHODS["mav"].calls_per_question(3, MAVSettings()) == 25


def test_settings_serialize_to_json_values() -> None:
    assert DebateSettings().to_json() == {"rounds": 2}
    assert MoASettings(aggregator="m1").to_json() == {"layers": 3, "aggregator": "m1"}
    assert MAVSettings().to_json() == {
        "candidates": 4,
        "aspects": ["final-answer", "steps"],
        "generator": None,
    }


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["3", "4", "4"], "4"),
        (["3", "4", "4", "3"], "3"),
        ([None, "4", None], "4"),
        (["", None], None),
        ([], None),
        (["1,000", "7", "1000"], "1,000"),
    ],
)
def test_vote_is_a_plain_majority_with_ties_to_the_earliest(
    answers: list[str | None], expected: str | None
) -> None:
    assert vote(answers, get_task("gsm8k")) == expected


def test_first_round_majority_pools_answers_in_model_order() -> None:
    task = get_task("arith")
    assert first_round_majority({"a": ["3"], "b": [], "c": ["4"]}, task) == "3"
    assert first_round_majority({"a": ["3"], "b": ["4"], "c": ["4"]}, task) == "4"
    assert first_round_majority({"a": [], "b": [None]}, task) is None


async def test_call_all_keeps_order_and_collects_backend_failures_only() -> None:
    caller = ScriptedCaller({"a": says("1"), "b": says("2")}, fail={("b", "s")})
    calls = [Call("a", "s", []), Call("b", "s", []), Call("a", "t", [], n=2)]
    replies, failures = await call_all(caller, calls)
    assert replies == [["work-s #### 1"], None, ["work-t #### 1", "work-t #### 1"]]
    assert failures == [
        {"step": "s", "model": "b", "error": "model 'b' failed at s", "retryable": True}
    ]
    assert caller.max_in_flight == 3
    with pytest.raises(KeyError):  # anything but a BackendError is not swallowed
        await call_all(caller, [Call("unknown", "s", [])])
