"""Mixture-of-Agents' layers, prompts, aggregator and failures, through a scripted caller."""

from __future__ import annotations

import pytest

from slm_mux.errors import InputError
from slm_mux.methods import MoASettings, moa
from slm_mux.methods.prompts import synthesis_instruction, with_system
from slm_mux.tasks import get_task
from slm_mux.tasks.base import Question

from .scripted import ScriptedCaller, says

ARITH = get_task("arith")
QUESTION = Question(id="q1", text="2+3", reference="5")
MODELS = ["qwen", "llama", "mistral"]


def tagged() -> ScriptedCaller:
    """Three proposers whose texts say who (by tag) and which step wrote them."""
    return ScriptedCaller(
        {"qwen": says("1", "alpha"), "llama": says("2", "beta"), "mistral": says("3", "gamma")}
    )


async def test_each_layer_sees_all_previous_layer_responses_numbered() -> None:
    caller = tagged()
    await moa(QUESTION, ARITH, MODELS, caller, MoASettings(layers=3))
    task_prompt = ARITH.messages(QUESTION)
    for model in MODELS:
        assert caller.call(model, "layer1").messages == task_prompt
        layer2 = caller.call(model, "layer2").messages
        assert layer2[1:] == [m for m in task_prompt if m["role"] != "system"]
        assert layer2[0]["role"] == "system"  # the task's system text, then the synthesis
        listing = layer2[0]["content"].split("Answers:\n", 1)[1]
        assert listing == ("1. alpha-layer1 #### 1\n2. beta-layer1 #### 2\n3. gamma-layer1 #### 3")
    final = caller.call("qwen", "aggregate").messages
    expected = ["alpha-layer2 #### 1", "beta-layer2 #### 2", "gamma-layer2 #### 3"]
    assert final == with_system(synthesis_instruction(expected), task_prompt)
    prompts = " ".join(m["content"] for record in caller.calls for m in record.messages)
    assert not [name for name in MODELS if name in prompts]


def test_a_task_system_message_gets_the_instruction_appended() -> None:
    task_prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]
    merged = with_system("Combine.", task_prompt)
    assert merged == [
        {"role": "system", "content": "Be brief.\n\nCombine."},
        {"role": "user", "content": "q"},
    ]


async def test_the_aggregators_answer_wins_without_a_vote() -> None:
    caller = ScriptedCaller(
        {
            "qwen": says("7"),
            "llama": says("7"),
            "mistral": lambda step, m, n: [f"{step} #### {5 if step == 'aggregate' else 7}"] * n,
        }
    )
    outcome = await moa(QUESTION, ARITH, MODELS, caller, MoASettings(aggregator="mistral"))
    assert outcome.answer == "5"
    assert outcome.first_round == {"qwen": ["7"], "llama": ["7"], "mistral": ["7"]}
    assert outcome.detail == {"aggregator": "mistral", "failures": []}
    assert [r.model for r in caller.calls if r.step == "aggregate"] == ["mistral"]


async def test_the_default_aggregator_is_the_first_pool_model() -> None:
    caller = tagged()
    outcome = await moa(QUESTION, ARITH, MODELS, caller, MoASettings())
    assert outcome.answer == "1"
    assert [r.model for r in caller.calls if r.step == "aggregate"] == ["qwen"]


@pytest.mark.parametrize(("models", "layers"), [(1, 2), (2, 2), (3, 3), (4, 4)])
async def test_calls_per_layer_go_out_together(models: int, layers: int) -> None:
    names = [f"m{i}" for i in range(models)]
    caller = ScriptedCaller({m: says("5") for m in names})
    await moa(QUESTION, ARITH, names, caller, MoASettings(layers=layers))
    assert len(caller.calls) == models * (layers - 1) + 1
    assert [r.step for r in caller.calls] == [
        *(f"layer{n}" for n in range(1, layers) for _ in names),
        "aggregate",
    ]
    assert caller.max_in_flight == models


async def test_an_unknown_aggregator_is_refused_before_any_call() -> None:
    caller = tagged()
    with pytest.raises(InputError, match="moa aggregator 'gpt' is not a pool model"):
        await moa(QUESTION, ARITH, MODELS, caller, MoASettings(aggregator="gpt"))
    assert caller.calls == []


async def test_a_failing_proposer_is_left_out_of_its_layer() -> None:
    caller = tagged()
    caller.fail = {("qwen", "layer1"), ("mistral", "layer2")}
    outcome = await moa(QUESTION, ARITH, MODELS, caller, MoASettings())
    assert outcome.first_round == {"qwen": [], "llama": ["2"], "mistral": ["3"]}
    listing = caller.call("qwen", "layer2").messages[0]["content"].split("Answers:\n", 1)[1]
    assert listing == "1. beta-layer1 #### 2\n2. gamma-layer1 #### 3"
    final = caller.call("qwen", "aggregate").messages[0]["content"].split("Answers:\n", 1)[1]
    assert final == "1. alpha-layer2 #### 1\n2. beta-layer2 #### 2"
    assert [(f["step"], f["model"]) for f in outcome.detail["failures"]] == [
        ("layer1", "qwen"),
        ("layer2", "mistral"),
    ]
    assert outcome.answer == "1"


async def test_a_failed_layer_or_aggregator_gives_no_answer() -> None:
    caller = tagged()
    caller.fail = {(m, "layer2") for m in MODELS}
    outcome = await moa(QUESTION, ARITH, MODELS, caller, MoASettings())
    assert outcome.answer is None
    assert not [r for r in caller.calls if r.step == "aggregate"]
    caller = tagged()
    caller.fail = {("llama", "aggregate")}
    outcome = await moa(QUESTION, ARITH, MODELS, caller, MoASettings(aggregator="llama"))
    assert outcome.answer is None
    assert outcome.first_round == {"qwen": ["1"], "llama": ["2"], "mistral": ["3"]}


def test_layers_must_leave_room_for_a_proposer_layer() -> None:
    with pytest.raises(InputError, match="moa layers must be at least 2"):
        MoASettings(layers=1)
