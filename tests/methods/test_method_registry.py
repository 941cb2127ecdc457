"""The one method registry: what each consumer lists, the votes, and adding a method."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import pytest

from slm_mux.analysis.evaluate import methods_of
from slm_mux.live import model_names
from slm_mux.methods import (
    REGISTRY,
    Ballot,
    Vote,
    compare_methods,
    discussion_methods,
    get_method,
    live_methods,
    method,
    offline_methods,
    sampled_live_methods,
    shared_methods,
)
from slm_mux.tasks import get_task

TASK = get_task("arith")


def _ballot(answers: Mapping[str, Sequence[str | None]], reference: str | None = "4") -> Ballot:
    k = {model: 3 for model in answers}
    # b has the best validation accuracy: the single-model votes read it.
    return Ballot(answers, TASK, k, {"a": 0.5, "b": 0.9, "c": 0.1}, "b", reference)


def test_each_consumer_reads_its_list_from_the_registry() -> None:
    assert compare_methods() == [
        "slm-mux",
        "debate",
        "moa",
        "mav",
        "agent-forest",
        "sc",
        "first-sample",
        "oracle",
    ]
    assert shared_methods() == ["slm-mux", "agent-forest", "sc", "first-sample", "oracle"]
    assert live_methods() == ["slm-mux", "agent-forest", "debate", "moa", "mav"]
    assert sampled_live_methods() == ["slm-mux", "agent-forest"]
    assert [spec.name for spec in offline_methods()] == [
        "slm-mux",
        "agent-forest",
        "single",
        "sc",
        "oracle",
    ]
    assert [str(m) for m in methods_of(["x", "y"])] == [
        "slm-mux",
        "agent-forest",
        "single:x",
        "single:y",
        "sc:x",
        "sc:y",
        "oracle",
    ]


def test_the_two_single_model_readings_have_two_names() -> None:
    ballot = _ballot({"a": ["4", "4", "4"], "b": ["5", "4", "4"]})
    assert get_method("first-sample").vote is not None
    first = get_method("first-sample").vote(ballot)  # type: ignore[misc]
    every = get_method("single").vote(ballot)  # type: ignore[misc]
    assert first == Vote(("5",), "b")
    assert first.score(TASK, "4") == 0.0
    assert every.score(TASK, "4") == pytest.approx(2 / 3)


def test_votes_over_one_question() -> None:
    ballot = _ballot({"a": ["4", "4", "7"], "b": ["5", "5", "4"], "c": ["7", "7", "7"]})

    def answer(name: str) -> str | None:
        rule = get_method(name).vote
        assert rule is not None
        return rule(ballot).answer

    mux = get_method("slm-mux").vote
    assert mux is not None
    chosen = mux(ballot)
    assert (chosen.answer, chosen.model) == ("7", "c")  # c is unanimous: most confident
    assert chosen.votes["a"] == {"4": 2, "7": 1}
    assert answer("agent-forest") == "7"  # 7 four times of nine
    assert answer("sc") == "5"
    assert answer("first-sample") == "5"
    assert answer("oracle") == "4"  # a's own majority is right
    assert get_method("oracle").vote(_ballot(ballot.answers, "9")).answer == "4"  # type: ignore[misc]


def test_votes_with_no_answers_submit_none() -> None:
    empty = _ballot({})
    for name in shared_methods():
        rule = get_method(name).vote
        assert rule is not None
        assert rule(empty).answer is None


@pytest.fixture
def restored() -> Iterator[None]:
    saved = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


@pytest.mark.usefixtures("restored")
def test_adding_a_method_is_one_decorated_function() -> None:
    @method(
        "last-model",
        kind="sampled",
        order=25,
        summary="the last model's first sample",
        live=True,
        compare=True,
    )
    def last_model(ballot: Ballot) -> Vote:
        answers = list(ballot.answers.values())
        return Vote((answers[-1][0] if answers and answers[-1] else None,))

    assert compare_methods()[-1] == "last-model"
    assert "last-model" in shared_methods()
    assert live_methods()[:3] == ["slm-mux", "agent-forest", "last-model"]
    assert model_names([])[:3] == live_methods()[:3]
    assert get_method("last-model").vote is last_model
    assert get_method("last-model").calls_per_question(4, None) == 4


@pytest.mark.usefixtures("restored")
def test_adding_a_discussion_method_puts_it_beside_the_others() -> None:
    async def echo(question, task, models, call, settings):  # type: ignore[no-untyped-def]
        raise AssertionError("not run")

    method(
        "echo",
        kind="discussion",
        order=13,
        summary="asks once",
        calls=lambda m, s: 1,
        live=True,
        compare=True,
    )(echo)
    assert compare_methods()[:5] == ["slm-mux", "debate", "moa", "mav", "echo"]
    assert live_methods()[-1] == "echo"
    assert "echo" in discussion_methods() and "echo" not in shared_methods()


@pytest.mark.usefixtures("restored")
def test_a_name_registers_once_and_a_discussion_method_needs_its_cost() -> None:
    with pytest.raises(ValueError, match="'sc' is registered twice"):
        method("sc", kind="sampled", order=0, summary="again")(lambda ballot: Vote(()))
    with pytest.raises(ValueError, match="needs its cost formula"):
        method("talk", kind="discussion", order=0, summary="no cost")
