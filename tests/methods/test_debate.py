"""LLM-Debate's control flow, prompts, vote and failures, through a scripted caller."""

from __future__ import annotations

import pytest

from slm_mux.errors import InputError
from slm_mux.methods import DebateSettings, debate
from slm_mux.tasks import get_task
from slm_mux.tasks.base import Question

from .scripted import ScriptedCaller, copier, says

ARITH = get_task("arith")
QUESTION = Question(id="q1", text="2+3", reference="5")


async def test_an_agent_that_copies_the_majority_converges_to_it() -> None:
    caller = ScriptedCaller({"a": says("5"), "b": says("5"), "c": copier("7")})
    outcome = await debate(QUESTION, ARITH, ["a", "b", "c"], caller, DebateSettings())
    assert outcome.answer == "5"
    assert outcome.first_round == {"a": ["5"], "b": ["5"], "c": ["7"]}
    assert outcome.detail["rounds"] == [
        {"a": "5", "b": "5", "c": "7"},
        {"a": "5", "b": "5", "c": "5"},
    ]


async def test_stubborn_agents_pull_a_correct_copier_into_groupthink() -> None:
    # The only correct agent copies what it is shown; the stubborn wrong pair wins.
    caller = ScriptedCaller({"a": copier("5"), "b": says("9"), "c": says("9")})
    outcome = await debate(QUESTION, ARITH, ["a", "b", "c"], caller, DebateSettings(rounds=3))
    assert outcome.first_round == {"a": ["5"], "b": ["9"], "c": ["9"]}
    assert [r["a"] for r in outcome.detail["rounds"]] == ["5", "9", "9"]
    assert [r["b"] for r in outcome.detail["rounds"]] == ["9", "9", "9"]
    assert outcome.answer == "9"


async def test_later_rounds_extend_each_agents_own_conversation_with_the_others() -> None:
    models = ["qwen", "llama", "mistral"]
    caller = ScriptedCaller(
        {"qwen": says("1", "alpha"), "llama": says("2", "beta"), "mistral": says("3", "gamma")}
    )
    await debate(QUESTION, ARITH, models, caller, DebateSettings(rounds=3))
    task_prompt = ARITH.messages(QUESTION)
    assert caller.call("qwen", "round1").messages == task_prompt
    second = caller.call("qwen", "round2").messages
    asked = len(task_prompt)  # arith: the answer-format system message and the expression
    reply = {"role": "assistant", "content": "alpha-round1 #### 1"}
    assert second[: asked + 1] == [*task_prompt, reply]
    follow_up = second[asked + 1]
    assert follow_up["role"] == "user"
    assert "Agent 2:\nbeta-round1 #### 2" in follow_up["content"]
    assert "Agent 3:\ngamma-round1 #### 3" in follow_up["content"]
    assert "Agent 1" not in follow_up["content"] and "alpha" not in follow_up["content"]
    assert QUESTION.text in follow_up["content"]  # the question is restated with its format
    third = caller.call("llama", "round3").messages
    roles = [m["role"] for m in task_prompt]
    assert [m["role"] for m in third] == [*roles, "assistant", "user", "assistant", "user"]
    assert third[-2]["content"] == "beta-round2 #### 2"
    assert "Agent 1:\nalpha-round2 #### 1" in third[-1]["content"]
    assert "Agent 3:\ngamma-round2 #### 3" in third[-1]["content"]
    assert "round1" not in third[-1]["content"]  # only the previous round is quoted
    prompts = " ".join(m["content"] for record in caller.calls for m in record.messages)
    assert not [name for name in models if name in prompts]  # agents stay anonymous


@pytest.mark.parametrize(
    ("models", "answers", "expected"),
    [
        (["a", "b"], ["3", "4"], "3"),
        (["b", "a"], ["4", "3"], "4"),
        (["a", "b", "c", "d"], ["3", "4", "4", "3"], "3"),
        (["a", "b", "c", "d"], ["3", "4", "4", "6"], "4"),
    ],
)
async def test_final_majority_ties_go_to_pool_order(
    models: list[str], answers: list[str], expected: str
) -> None:
    caller = ScriptedCaller({m: says(a) for m, a in zip(models, answers, strict=True)})
    outcome = await debate(QUESTION, ARITH, models, caller, DebateSettings())
    assert outcome.answer == expected


@pytest.mark.parametrize(
    ("answers", "expected"),
    [(["1,000", "7", "1000.0"], "1,000"), (["7", "1000.0", "1,000"], "1000.0")],
)
async def test_votes_use_the_tasks_equivalence(answers: list[str], expected: str) -> None:
    gsm8k = get_task("gsm8k")
    models = ["a", "b", "c"]
    caller = ScriptedCaller({m: says(a) for m, a in zip(models, answers, strict=True)})
    outcome = await debate(QUESTION, gsm8k, models, caller, DebateSettings(rounds=1))
    assert outcome.answer == expected


@pytest.mark.parametrize(("agents", "rounds"), [(1, 1), (2, 2), (3, 2), (4, 3)])
async def test_each_round_calls_every_agent_at_once(agents: int, rounds: int) -> None:
    models = [f"m{i}" for i in range(agents)]
    caller = ScriptedCaller({m: says("5") for m in models})
    await debate(QUESTION, ARITH, models, caller, DebateSettings(rounds=rounds))
    assert len(caller.calls) == agents * rounds
    assert [r.step for r in caller.calls] == [
        f"round{n}" for n in range(1, rounds + 1) for _ in models
    ]
    assert all(r.n == 1 for r in caller.calls)
    assert caller.max_in_flight == agents


async def test_a_failing_agent_sits_out_its_round_and_rejoins() -> None:
    caller = ScriptedCaller(
        {"a": says("5", "alpha"), "b": says("9", "beta"), "c": says("5", "gamma")},
        fail={("b", "round1")},
    )
    outcome = await debate(QUESTION, ARITH, ["a", "b", "c"], caller, DebateSettings())
    assert outcome.first_round == {"a": ["5"], "b": [], "c": ["5"]}
    assert [(f["step"], f["model"]) for f in outcome.detail["failures"]] == [("round1", "b")]
    shown_to_a = caller.call("a", "round2").messages[-1]["content"]
    assert "beta" not in shown_to_a and "Agent 3:\ngamma-round1 #### 5" in shown_to_a
    rejoined = caller.call("b", "round2").messages
    assert [m["role"] for m in rejoined] == [*(m["role"] for m in ARITH.messages(QUESTION)), "user"]
    assert "alpha-round1" in rejoined[-1]["content"]
    assert outcome.detail["rounds"][1] == {"a": "5", "b": "9", "c": "5"}
    assert outcome.answer == "5"


async def test_no_answer_when_every_agent_fails_the_last_round() -> None:
    models = ["a", "b"]
    caller = ScriptedCaller({m: says("5") for m in models}, fail={("a", "round2"), ("b", "round2")})
    outcome = await debate(QUESTION, ARITH, models, caller, DebateSettings())
    assert outcome.answer is None
    assert outcome.first_round == {"a": ["5"], "b": ["5"]}


async def test_unparseable_replies_are_no_vote() -> None:
    caller = ScriptedCaller({"a": lambda step, m, n: ["no idea"] * n, "b": says("4")})
    outcome = await debate(QUESTION, ARITH, ["a", "b"], caller, DebateSettings())
    assert outcome.first_round == {"a": [None], "b": ["4"]}
    assert outcome.answer == "4"


def test_rounds_must_be_positive() -> None:
    with pytest.raises(InputError, match="debate rounds must be at least 1, not 0"):
        DebateSettings(rounds=0)
