"""Answering one chat request (`slm_mux.live`): every method on scripted models."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

import pytest

from slm_mux.backends.base import Batch, Completion, GenerationRequest
from slm_mux.backends.scripted import Script, ScriptedBackend
from slm_mux.engine import Answer, Mux
from slm_mux.errors import BackendError, InputError
from slm_mux.live import ChatTask, answer, model_names
from slm_mux.members import Member
from slm_mux.methods import MoASettings
from slm_mux.tasks import Question, get_task
from slm_mux.tasks.base import Message
from slm_mux.tasks.exact import ExactTask

EXACT = get_task("exact")
REQUEST: list[Message] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
]


def _member(name: str, script: Script) -> Member:
    return Member(ScriptedBackend(name, script))


def _backend(member: Member) -> ScriptedBackend:
    backend = member.backend
    assert isinstance(backend, ScriptedBackend)
    return backend


def _used(members: Sequence[Member]) -> tuple[int, int, int]:
    """Responses, prompt and completion tokens the scripted backends handed out."""
    backends = [_backend(m) for m in members]
    return (
        sum(len(b.requests) for b in backends),
        sum(b.usage.prompt_tokens for b in backends),
        sum(b.usage.completion_tokens for b in backends),
    )


def _totals(found: Answer) -> tuple[int, int, int]:
    return found.calls, found.prompt_tokens, found.completion_tokens


class _SystemTask(ExactTask):
    """The exact task with a system message of its own."""

    def messages(self, question: Question) -> list[Message]:
        return [{"role": "system", "content": "Think step by step."}, *super().messages(question)]


def test_chat_task_puts_the_task_prompt_on_the_last_user_message_after_earlier_turns() -> None:
    request: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 1+1?"},
        {"role": "assistant", "content": "Answer: 2"},
        {"role": "user", "content": "And 2+2?"},
    ]
    chat = ChatTask(_SystemTask(), request)
    assert chat.question.text == "And 2+2?"
    assert chat.messages(chat.question) == [
        {"role": "system", "content": "Be brief.\n\nThink step by step."},
        *request[1:3],
        {"role": "user", "content": "And 2+2?\n\nEnd your reply with a line 'Answer: <answer>'."},
    ]
    bare = ChatTask(_SystemTask(), [{"role": "user", "content": "Hi"}])
    assert bare.messages(bare.question)[0] == {"role": "system", "content": "Think step by step."}


def test_chat_task_grades_and_clusters_like_its_base_task() -> None:
    chat = ChatTask(get_task("math"), REQUEST)
    assert chat.name == "math"
    assert chat.extract("so \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert chat.cluster(["\\frac{1}{2}", "0.5", "3"]) == [0, 0, 1]
    assert chat.grade("0.5", "1/2")


def test_chat_task_without_a_user_message_is_refused() -> None:
    with pytest.raises(InputError, match="no user message"):
        ChatTask(EXACT, [{"role": "system", "content": "Be brief."}])


async def test_slm_mux_answers_with_the_most_confident_model_and_one_of_its_replies() -> None:
    members = [
        _member("split", {"*": ["Answer: 3", "Answer: 5", "Answer: 4"]}),
        _member("sure", {"*": ["I add.\nAnswer: 4", "Answer:  4", "Answer: 4"]}),
        _member("broken", {"nothing matches": ["Answer: 1"]}),
    ]
    found = await answer("slm-mux", REQUEST, members, task=EXACT)
    assert (found.answer, found.model, found.confidence) == ("4", "sure", 1.0)
    assert found.text == "I add.\nAnswer: 4"
    assert found.votes == {"split": {"3": 1, "5": 1, "4": 1}, "sure": {"4": 3}, "broken": {}}
    assert list(found.failed) == ["broken"]
    assert "no scripted answer" in found.failed["broken"]
    # 13 prompt words per answering model; "broken" failed before answering.
    assert _totals(found) == (2, 26, 14)
    assert _totals(found)[1:] == _used(members)[1:]


async def test_slm_mux_is_the_same_rule_as_mux() -> None:
    def members() -> list[Member]:
        return [
            _member("a", {"*": ["Answer: 1", "Answer: 2", "Answer: 2"]}),
            _member("b", {"*": ["Answer: 3", "Answer: 3", "Answer: 1"]}),
        ]

    accuracy = {"b": 0.9, "a": 0.5}
    found = await answer(
        "slm-mux",
        [{"role": "user", "content": "q"}],
        members(),
        task=EXACT,
        validation_accuracy=accuracy,
    )
    mux = await Mux(members(), task=EXACT, validation_accuracy=accuracy).aask("q")
    assert (found.answer, found.model, found.confidence, found.votes) == (
        mux.answer,
        mux.model,
        mux.confidence,
        mux.votes,
    )
    assert found.model == "b"  # the tie goes to the better validation accuracy


async def test_per_request_settings_apply_to_copies_of_the_members() -> None:
    members = [_member(name, {"*": ["Answer: 4"]}) for name in ("a", "b")]
    found = await answer(
        "slm-mux", REQUEST, members, task=EXACT, k=5, temperature=0.9, max_tokens=64, seed=7
    )
    assert found.votes == {"a": {"4": 5}, "b": {"4": 5}}
    for member in members:
        (request,) = _backend(member).requests
        assert (request.n, request.temperature, request.max_tokens) == (5, 0.9, 64)
        assert request.seed is not None
        assert (member.k, member.temperature, member.seed) == (3, 0.3, 0)
    again = [_member(name, {"*": ["Answer: 4"]}) for name in ("a", "b")]
    await answer("slm-mux", REQUEST, again, task=EXACT, k=5, seed=7)
    seeds = [[r.seed for r in _backend(m).requests] for m in (*members, *again)]
    assert seeds[:2] == seeds[2:]  # the same request and seed sample the same way


async def test_agent_forest_takes_the_pooled_majority() -> None:
    members = [
        _member("sure", {"*": ["Answer: 7"]}),
        _member("b", {"*": ["Answer: 6", "B says\nAnswer: 5", "Answer: 5"]}),
        _member("c", {"*": ["Answer: 5", "Answer: 5", "Answer: 6"]}),
    ]
    forest = await answer("agent-forest", REQUEST, members, task=EXACT)
    assert (forest.answer, forest.model, forest.text) == ("5", "b", "B says\nAnswer: 5")
    assert forest.confidence is None
    assert forest.votes["c"] == {"5": 2, "6": 1}
    mux = await answer("slm-mux", REQUEST, members, task=EXACT)
    assert (mux.answer, mux.model) == ("7", "sure")


async def test_debate_answers_with_the_last_reply_giving_the_majority() -> None:
    members = [
        _member("a", {"*": ["a thinks\nAnswer: 4"]}),
        _member("b", {"Other agents": ["b changed\nAnswer: 4"], "*": ["Answer: 5"]}),
        _member("c", {"*": ["Answer: 6"]}),
    ]
    found = await answer("debate", REQUEST, members, task=EXACT)
    assert (found.answer, found.model, found.text) == ("4", "b", "b changed\nAnswer: 4")
    assert (found.votes, found.failed, found.confidence) == ({}, {}, None)
    assert found.calls == 6  # 3 agents x 2 rounds
    assert _totals(found) == _used(members)


async def test_moa_aggregates_with_the_best_validation_model() -> None:
    members = [
        _member("a", {"*": ["Answer: 3"]}),
        _member("b", {"*": ["merged\nAnswer: 4"]}),
    ]
    found = await answer(
        "moa", REQUEST, members, task=EXACT, validation_accuracy={"b": 0.8, "a": 0.6}
    )
    assert (found.answer, found.model, found.text) == ("4", "b", "merged\nAnswer: 4")
    assert [len(_backend(m).requests) for m in members] == [2, 3]  # 2 layers + aggregate
    assert _totals(found) == _used(members)
    chosen = await answer(
        "moa", REQUEST, members, task=EXACT, settings=MoASettings(layers=2, aggregator="a")
    )
    assert (chosen.answer, chosen.model, chosen.calls) == ("3", "a", 3)


async def test_mav_answers_with_the_chosen_candidate_not_a_verdict() -> None:
    def generator(prompt: str, index: int) -> str:
        if "Proposed solution" in prompt:
            right = "Answer: 9" in prompt
            return "Checked.\nAnswer: 9\nVerdict: approve" if right else "Verdict: reject"
        return ["Answer: 3", "I think\nAnswer: 9"][index % 2]

    members = [_member("g", generator), _member("v", generator)]
    found = await answer("mav", REQUEST, members, task=EXACT)
    assert (found.answer, found.model, found.text) == ("9", "g", "I think\nAnswer: 9")
    # 1 generation of 4 candidates + 4 candidates x 2 aspects x 2 verifiers.
    assert found.calls == 17
    assert _totals(found) == _used(members)


async def test_a_pool_model_name_passes_the_request_through_unchanged() -> None:
    members = [_member("a", {"*": ["first", "second"]}), _member("b", {"*": ["x"]})]
    found = await answer("a", REQUEST, members, task=EXACT, n=2, seed=11)
    assert (found.answer, found.model, found.text, found.texts) == (
        None,
        "a",
        "first",
        ("first", "second"),
    )
    (request,) = _backend(members[0]).requests
    assert (request.messages, request.n, request.seed) == (REQUEST, 2, 11)
    assert _backend(members[1]).requests == []
    assert _totals(found) == _used(members)


async def test_unknown_models_and_n_for_a_method_are_refused() -> None:
    members = [_member("a", {"*": ["Answer: 1"]})]
    assert model_names(members) == ["slm-mux", "agent-forest", "debate", "moa", "mav", "a"]
    with pytest.raises(InputError, match=r"unknown model 'gpt-9'; choose from slm-mux.*, a$"):
        await answer("gpt-9", REQUEST, members, task=EXACT)
    with pytest.raises(InputError, match="'slm-mux' gives one reply per request, not n=2"):
        await answer("slm-mux", REQUEST, members, task=EXACT, n=2)
    assert _backend(members[0]).requests == []


@pytest.mark.parametrize("method", ["slm-mux", "agent-forest", "debate", "moa", "mav"])
async def test_every_model_failing_raises_with_every_reason(method: str) -> None:
    members = [_member(name, {"nothing matches": ["Answer: 1"]}) for name in ("a", "b")]
    with pytest.raises(BackendError, match=r"every model failed; a: .*no scripted answer") as info:
        await answer(method, REQUEST, members, task=EXACT)
    assert "; b: " in str(info.value) or method == "mav"  # mav asks its generator alone


class _Hanging:
    """A backend that never answers and records each call it starts and each cancelled."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = 0
        self.cancelled = 0

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Batch]:
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        yield []

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.mark.parametrize("method", ["slm-mux", "debate", "a"])
async def test_cancelling_the_request_cancels_every_call_in_flight(method: str) -> None:
    backends = [_Hanging(name) for name in ("a", "b", "c")]
    members = [Member(backend) for backend in backends]
    running = asyncio.ensure_future(answer(method, REQUEST, members, task=EXACT))
    expected = 1 if method == "a" else 3
    for _ in range(100):
        if sum(b.started for b in backends) == expected:
            break
        await asyncio.sleep(0)
    assert sum(b.started for b in backends) == expected
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert [b.cancelled for b in backends] == [b.started for b in backends]


class _SlowGradingTask(ExactTask):
    """The exact task with an ``equivalent`` of its own (declared: not exact equivalence)
    that records the thread it runs on."""

    exact_equivalence = False

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def equivalent(self, first: str, second: str) -> bool:
        self.threads.add(threading.get_ident())
        return super().equivalent(first, second)


async def test_clustering_leaves_the_event_loop_only_for_a_task_with_its_own_equivalence() -> None:
    members = [_member(name, {"*": ["Answer: 1", "Answer: 2"]}) for name in ("a", "b")]
    slow = _SlowGradingTask()
    found = await answer("slm-mux", REQUEST, members, task=slow)
    assert found.answer == "1"
    assert slow.threads and threading.get_ident() not in slow.threads
    cheap = await answer("slm-mux", REQUEST, members, task=EXACT)
    assert cheap == found  # the same answer either way


async def test_no_answer_because_models_failed_raises_for_every_method_alike() -> None:
    """moa's proposers answer, its aggregator fails: no answer, so the request failed."""
    members = [
        _member("a", {"*": ["Answer: 1"]}),
        _member("b", {"never": ["Answer: 2"]}),
    ]
    settings = MoASettings(layers=2, aggregator="b")
    with pytest.raises(BackendError, match=r"^no answer; b: .*no scripted answer"):
        await answer("moa", REQUEST, members, task=EXACT, settings=settings)
    # A model that failed while another answered leaves an answer: no error.
    found = await answer("slm-mux", REQUEST, members, task=EXACT)
    assert (found.answer, list(found.failed)) == ("1", ["b"])
