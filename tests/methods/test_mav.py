"""Multi-Agent Verification: candidates, verdicts, winner and failures, scripted."""

from __future__ import annotations

import re

import pytest

from slm_mux.errors import InputError
from slm_mux.methods import MAVSettings, approves, mav
from slm_mux.methods.mav import read_verdict
from slm_mux.methods.prompts import ASPECTS
from slm_mux.tasks import get_task
from slm_mux.tasks.base import Message, Question

from .scripted import Behaviour, ScriptedCaller

ARITH = get_task("arith")
QUESTION = Question(id="q1", text="2+3", reference="5")
CANDIDATES = ["first #### 4", "second #### 5", "third #### 6", "fourth #### 5"]


def verifier(judge: str, generated: list[str] = CANDIDATES) -> Behaviour:
    """Proposes ``generated`` when asked to generate; verifies as ``judge`` says:
    "correct" approves only candidates whose answer is right, "all" approves everything,
    "none" rejects everything."""

    def behaviour(step: str, messages: list[Message], n: int) -> list[str]:
        if step == "generate":
            return generated[:n]
        solution = re.search(r"Proposed solution:\n(.*?)\n\n", messages[-1]["content"], re.S)
        assert solution is not None
        right = ARITH.grade(ARITH.extract(solution.group(1)), QUESTION.reference)
        approve = judge == "all" or (judge == "correct" and right)
        return [f"Checked it.\nVerdict: {'approve' if approve else 'reject'}"] * n

    return behaviour


async def test_a_verifier_that_approves_only_correct_candidates_picks_one() -> None:
    caller = ScriptedCaller({"qwen": verifier("correct"), "llama": verifier("correct")})
    outcome = await mav(QUESTION, ARITH, ["qwen", "llama"], caller, MAVSettings())
    assert outcome.answer == "5"
    assert outcome.detail["approvals"] == [0.0, 1.0, 0.0, 1.0]
    assert outcome.detail["chosen"] == 1
    assert outcome.first_round is None


async def test_approval_fractions_pool_every_verifier_and_aspect() -> None:
    caller = ScriptedCaller(
        {"qwen": verifier("correct"), "llama": verifier("all"), "mistral": verifier("none")}
    )
    outcome = await mav(QUESTION, ARITH, ["qwen", "llama", "mistral"], caller, MAVSettings())
    assert outcome.detail["approvals"] == pytest.approx([1 / 3, 2 / 3, 1 / 3, 2 / 3])
    assert outcome.answer == "5"


@pytest.mark.parametrize("judge", ["all", "none"])
async def test_ties_go_to_the_earliest_candidate(judge: str) -> None:
    caller = ScriptedCaller({"qwen": verifier(judge)})
    outcome = await mav(QUESTION, ARITH, ["qwen"], caller, MAVSettings())
    assert outcome.detail["chosen"] == 0
    assert outcome.answer == "4"


async def test_one_generate_call_then_every_verification_at_once() -> None:
    models = ["qwen", "llama", "mistral"]
    caller = ScriptedCaller({m: verifier("correct") for m in models})
    settings = MAVSettings(candidates=3, aspects=("steps", "final-answer"), generator="llama")
    await mav(QUESTION, ARITH, models, caller, settings)
    generate, *checks = caller.calls
    assert (generate.model, generate.step, generate.n) == ("llama", "generate", 3)
    assert generate.messages == ARITH.messages(QUESTION)
    assert len(checks) == 3 * 3 * 2
    assert {(r.model, r.step) for r in checks} == {
        (m, f"verify/c{c:02d}/{a}") for m in models for c in range(3) for a in settings.aspects
    }
    assert all(r.n == 1 for r in checks)
    assert caller.max_in_flight == 3 * 3 * 2
    prompt = caller.call("mistral", "verify/c02/steps").messages
    assert len(prompt) == 1 and prompt[0]["role"] == "user"
    text = prompt[0]["content"]
    assert ARITH.messages(QUESTION)[-1]["content"] in text  # the problem, not its answer format
    assert CANDIDATES[2] in text and CANDIDATES[1] not in text
    assert ASPECTS["steps"] in text and ASPECTS["final-answer"] not in text
    assert "Verdict: approve" in text and "Verdict: reject" in text


@pytest.mark.parametrize(
    ("reply", "approved"),
    [
        ("Verdict: approve", True),
        ("verdict: APPROVED.", True),
        ("The steps hold.\n**Verdict:** Approve", True),
        ("Verdict: reject", False),
        ("Verdict - rejected", False),
        ("I first thought it was wrong, but no. Verdict: approve", True),
        ("Looks right at first, yet. Verdict: reject", False),
        ("Verdict: yes", True),
        ("Verdict: no", False),
        ("Verdict: correct", True),
        ("Verdict: incorrect", False),
        ("The final answer is correct.", True),
        ("The final answer is incorrect.", False),
        ("Correct at first glance; on checking, wrong.", False),
        ("Answer: yes", True),
        ("I cannot tell.", False),
        ("", False),
        ("Verdict: unsure", False),
    ],
)
def test_verdict_parsing(reply: str, approved: bool) -> None:
    assert approves(reply) is approved


def test_unknown_aspects_and_empty_settings_are_refused() -> None:
    with pytest.raises(InputError, match="unknown mav aspect 'style'; choose from final-answer"):
        MAVSettings(aspects=("steps", "style"))
    with pytest.raises(InputError, match="mav needs at least one aspect"):
        MAVSettings(aspects=())
    with pytest.raises(InputError, match="mav candidates must be at least 1, not 0"):
        MAVSettings(candidates=0)


async def test_an_unknown_generator_is_refused_before_any_call() -> None:
    caller = ScriptedCaller({"qwen": verifier("all")})
    with pytest.raises(InputError, match="mav generator 'gpt' is not a pool model"):
        await mav(QUESTION, ARITH, ["qwen"], caller, MAVSettings(generator="gpt"))
    assert caller.calls == []


async def test_a_failed_verification_is_left_out_of_the_fraction() -> None:
    models = ["qwen", "llama"]
    caller = ScriptedCaller(
        {"qwen": verifier("all"), "llama": verifier("correct")},
        # llama's rejections of candidate 0 are lost; qwen's approvals stand alone.
        fail={("llama", "verify/c00/final-answer"), ("llama", "verify/c00/steps")},
    )
    outcome = await mav(QUESTION, ARITH, models, caller, MAVSettings())
    assert outcome.detail["approvals"] == [1.0, 1.0, 0.5, 1.0]
    assert outcome.answer == "4"
    assert len(outcome.detail["failures"]) == 2


async def test_a_candidate_without_any_verdict_cannot_win() -> None:
    caller = ScriptedCaller(
        {"qwen": verifier("none")},
        fail={("qwen", "verify/c00/final-answer"), ("qwen", "verify/c00/steps")},
    )
    outcome = await mav(QUESTION, ARITH, ["qwen"], caller, MAVSettings())
    assert outcome.detail["approvals"] == [None, 0.0, 0.0, 0.0]
    assert outcome.answer == "5"


async def test_no_answer_when_the_generator_or_every_verifier_fails() -> None:
    caller = ScriptedCaller({"qwen": verifier("all")}, fail={("qwen", "generate")})
    outcome = await mav(QUESTION, ARITH, ["qwen"], caller, MAVSettings())
    assert outcome.answer is None
    assert [r.step for r in caller.calls] == ["generate"]
    settings = MAVSettings(candidates=2, aspects=("steps",))
    caller = ScriptedCaller(
        {"qwen": verifier("all")}, fail={("qwen", f"verify/c0{c}/steps") for c in range(2)}
    )
    outcome = await mav(QUESTION, ARITH, ["qwen"], caller, settings)
    assert outcome.answer is None
    assert outcome.detail["approvals"] == [None, None]


async def test_replies_without_a_verdict_line_are_counted() -> None:
    """SmolLM2-135M wrote no "Verdict:" line in most replies; the outcome says how many."""

    def unmarked(step: str, messages: list[Message], n: int) -> list[str]:
        if step == "generate":
            return CANDIDATES[:n]
        right = "second" in messages[-1]["content"]
        return ["Yes, the answer is correct." if right else "Verdict: reject"] * n

    caller = ScriptedCaller({"qwen": unmarked})
    outcome = await mav(QUESTION, ARITH, ["qwen"], caller, MAVSettings())
    assert outcome.answer == "5"
    assert outcome.detail["verdicts"] == len(CANDIDATES) * len(MAVSettings().aspects)
    assert outcome.detail["unparsed_verdicts"] == len(MAVSettings().aspects)
    assert read_verdict("Verdict: approve") == (True, True)
    assert read_verdict("Yes, it is correct.") == (True, False)
