"""The server through the official ``openai`` SDK: replies, streams, models, methods, auth."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from slm_mux.members import Member
from slm_mux.methods import live_methods
from slm_mux.pool import members_of, pool_from_dict
from slm_mux.testing import FakeServerConfig, run_fake_server

from .helpers import Serve, backends, scripted_pool

QUESTION = [{"role": "user", "content": "What is 2+2?"}]


def client(url: str, **options: Any) -> openai.OpenAI:
    options.setdefault("api_key", "unused")
    return openai.OpenAI(base_url=url, max_retries=0, **options)


def test_slm_mux_reply_is_a_chat_completion_with_the_selection(serve: Serve) -> None:
    members = scripted_pool()
    with serve(members) as url:
        reply = client(url).chat.completions.create(model="slm-mux", messages=QUESTION)  # type: ignore[arg-type]
    assert reply.object == "chat.completion"
    assert reply.model == "slm-mux"
    assert reply.id.startswith("chatcmpl-")
    (choice,) = reply.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "Work: 2+2.\nAnswer: 4"  # beta's reply: 3/3 sure of 4
    assert choice.finish_reason == "stop"
    assert reply.model_extra is not None
    assert reply.model_extra["slm_mux"] == {
        "answer": "4",
        "model": "beta",
        "confidence": 1.0,
        "votes": {"alpha": {"4": 2, "5": 1}, "beta": {"4": 3}, "gamma": {"7": 1, "8": 1, "9": 1}},
        "failed": {},
    }
    used = backends(members).values()
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == sum(b.usage.prompt_tokens for b in used) > 0
    assert reply.usage.completion_tokens == sum(b.usage.completion_tokens for b in used) == 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # Every model got the question once, asking for its k samples, with the task's prompt.
    for backend in used:
        (request,) = backend.requests
        assert request.n == 3
        assert request.messages[-1]["content"].startswith("What is 2+2?")
        assert "Answer: <answer>" in request.messages[-1]["content"]


def test_request_settings_reach_every_model(serve: Serve) -> None:
    members = scripted_pool()
    system = {"role": "system", "content": "Be brief."}
    with serve(members) as url:
        client(url).chat.completions.create(
            model="slm-mux",
            messages=[system, *QUESTION],  # type: ignore[list-item]
            temperature=0.9,
            max_completion_tokens=17,
            seed=5,
            extra_body={"k": 2},
        )
    for backend in backends(members).values():
        (request,) = backend.requests
        assert (request.n, request.temperature, request.max_tokens) == (2, 0.9, 17)
        assert request.messages[0] == system


def collect(stream: Any) -> list[Any]:
    return list(stream)


@pytest.mark.parametrize("include_usage", [False, True])
def test_streaming_sends_role_content_and_finish_chunks(serve: Serve, include_usage: bool) -> None:
    members = scripted_pool()
    with serve(members) as url:
        chunks = collect(
            client(url).chat.completions.create(
                model="slm-mux",
                messages=QUESTION,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True} if include_usage else None,
            )
        )
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    with_choices = [chunk for chunk in chunks if chunk.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    assert text == "Work: 2+2.\nAnswer: 4"
    assert [chunk.choices[0].finish_reason for chunk in with_choices][-1] == "stop"
    assert with_choices[-1].model_extra["slm_mux"]["answer"] == "4"
    if include_usage:
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 24
        assert all(chunk.usage is None for chunk in chunks[:-1])
    else:
        assert chunks == with_choices  # every chunk has choices[0]: naive clients do not break
        assert all(chunk.usage is None for chunk in chunks)


def test_a_pool_model_by_name_passes_the_request_through(serve: Serve) -> None:
    members = scripted_pool()
    messages = [{"role": "system", "content": "Be brief."}, *QUESTION]
    with serve(members) as url:
        reply = client(url).chat.completions.create(model="alpha", messages=messages, n=3)  # type: ignore[arg-type]
    assert reply.model == "alpha"
    assert [c.message.content for c in reply.choices] == ["Answer: 4", "Answer: 4", "Answer: 5"]
    assert [c.index for c in reply.choices] == [0, 1, 2]
    found = backends(members)
    (request,) = found["alpha"].requests
    assert request.messages == messages  # as sent: no task prompt
    assert request.n == 3
    assert found["beta"].requests == found["gamma"].requests == []
    assert reply.model_extra is not None
    assert reply.model_extra["slm_mux"]["model"] == "alpha"
    assert reply.model_extra["slm_mux"]["answer"] is None


def test_streamed_pass_through_streams_every_choice(serve: Serve) -> None:
    with serve(scripted_pool()) as url:
        chunks = collect(
            client(url).chat.completions.create(
                model="gamma",
                messages=QUESTION,  # type: ignore[arg-type]
                n=2,
                stream=True,
            )
        )
    texts: dict[int, str] = {}
    for chunk in chunks:
        (choice,) = chunk.choices
        texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: "Answer: 7", 1: "Answer: 8"}


@pytest.mark.parametrize(
    ("method", "calls"),
    [("agent-forest", 3), ("debate", 3 * 2), ("moa", 3 * 2 + 1), ("mav", 1 + 3 * 4 * 2)],
)
def test_each_comparison_method_is_a_model(serve: Serve, method: str, calls: int) -> None:
    members = scripted_pool()
    with serve(members) as url:
        reply = client(url).chat.completions.create(model=method, messages=QUESTION)  # type: ignore[arg-type]
    assert reply.model == method
    assert reply.model_extra is not None
    selection = reply.model_extra["slm_mux"]
    assert selection["answer"] == "4"
    assert selection["failed"] == {}
    assert reply.choices[0].message.content is not None
    assert reply.choices[0].message.content.endswith("Answer: 4")
    sent = sum(len(b.requests) for b in backends(members).values())
    assert sent == calls  # the method's own cost formula, on a pool of 3 (k = 3, 2 rounds ...)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == sum(
        b.usage.completion_tokens for b in backends(members).values()
    )


def test_agent_forest_pools_the_votes(serve: Serve) -> None:
    with serve(scripted_pool()) as url:
        reply = client(url).chat.completions.create(model="agent-forest", messages=QUESTION)  # type: ignore[arg-type]
    assert reply.model_extra is not None
    selection = reply.model_extra["slm_mux"]
    assert selection["votes"]["beta"] == {"4": 3}
    assert selection["confidence"] is None


def test_models_lists_methods_then_the_pool_and_health_calls_no_model(serve: Serve) -> None:
    members = scripted_pool()
    with serve(members) as url:
        listed = [model.id for model in client(url).models.list()]
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
    assert listed == ["slm-mux", "agent-forest", "debate", "moa", "mav", "alpha", "beta", "gamma"]
    assert health == {"status": "ok", "models": 3}
    assert all(b.requests == [] for b in backends(members).values())


def test_one_failing_model_is_named_and_left_out(serve: Serve) -> None:
    members = scripted_pool({**SCRIPT_BROKEN_GAMMA})
    with serve(members) as url:
        reply = client(url).chat.completions.create(model="slm-mux", messages=QUESTION)  # type: ignore[arg-type]
    assert reply.model_extra is not None
    selection = reply.model_extra["slm_mux"]
    assert selection["answer"] == "4"
    assert set(selection["votes"]) >= {"alpha", "beta"}
    assert selection["failed"] == {"gamma": "failed"}  # our summary: the reason is logged


SCRIPT_BROKEN_GAMMA: dict[str, Any] = {
    "alpha": {"*": ["Answer: 4", "Answer: 4", "Answer: 5"]},
    "beta": {"*": ["Answer: 4"]},
    "gamma": {"never asked": ["Answer: 7"]},
}


def test_every_model_failing_is_a_502_naming_the_reasons(serve: Serve) -> None:
    members = scripted_pool({"alpha": {"x-never": ["Answer: 1"]}, "beta": {"y-never": ["A"]}})
    with serve(members) as url, pytest.raises(openai.APIStatusError) as raised:
        client(url).chat.completions.create(model="slm-mux", messages=QUESTION)  # type: ignore[arg-type]
    assert raised.value.status_code == 502
    body = raised.value.body
    assert isinstance(body, dict)
    assert "every model failed" in body["message"]
    assert "alpha" in body["message"]


@pytest.mark.parametrize("method", live_methods())
def test_every_method_whose_models_all_failed_is_a_502_naming_each_reason(
    serve: Serve, method: str
) -> None:
    members = scripted_pool({"alpha": {"x-never": ["Answer: 1"]}, "beta": {"y-never": ["A"]}})
    with serve(members) as url, pytest.raises(openai.APIStatusError) as raised:
        client(url).chat.completions.create(model=method, messages=QUESTION)  # type: ignore[arg-type]
    assert raised.value.status_code == 502
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["message"].startswith("every model failed; ")
    # the best model: asked by every method (mav's generator); its reason is logged only
    assert "model 'beta': failed" in body["message"]
    assert "no scripted answer" not in body["message"]


def test_a_discussion_left_without_an_answer_by_failures_is_a_502(serve: Serve) -> None:
    """moa's proposers answer but its aggregator (beta, the best model) fails."""
    members = scripted_pool({"alpha": {"*": ["Answer: 4"]}, "beta": {"y-never": ["A"]}})
    with serve(members) as url, pytest.raises(openai.APIStatusError) as raised:
        client(url).chat.completions.create(model="moa", messages=QUESTION)  # type: ignore[arg-type]
    assert raised.value.status_code == 502
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["message"].startswith("no answer; model 'beta': failed")


def test_api_key_is_required_when_configured(serve: Serve) -> None:
    with serve(scripted_pool(), api_key="s3cret-token") as url:
        for key in ("wrong", "s3cret-tokenX"):
            with pytest.raises(openai.AuthenticationError) as raised:
                client(url, api_key=key).chat.completions.create(
                    model="slm-mux",
                    messages=QUESTION,  # type: ignore[arg-type]
                )
            assert raised.value.status_code == 401
            assert raised.value.code == "invalid_api_key"
            assert "s3cret" not in str(raised.value.body)
        with pytest.raises(openai.AuthenticationError):
            client(url, api_key="wrong").models.list()
        reply = client(url, api_key="s3cret-token").chat.completions.create(
            model="slm-mux",
            messages=QUESTION,  # type: ignore[arg-type]
        )
    assert reply.choices[0].message.content == "Work: 2+2.\nAnswer: 4"


async def test_concurrent_async_clients_each_get_their_answer(serve: Serve) -> None:
    members = scripted_pool(
        {
            "alpha": {"odd": ["Answer: odd"], "*": ["Answer: even"]},
            "beta": {"odd": ["Answer: odd"], "*": ["Answer: even"]},
        }
    )
    with serve(members) as url:
        async with openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0) as api:
            replies = await asyncio.gather(
                *(
                    api.chat.completions.create(
                        model="slm-mux",
                        messages=[{"role": "user", "content": f"{i} is {'odd' if i % 2 else ''}"}],
                    )
                    for i in range(40)
                )
            )
    assert [r.choices[0].message.content for r in replies] == [
        "Answer: odd" if i % 2 else "Answer: even" for i in range(40)
    ]
    assert all(len(b.requests) == 40 for b in backends(members).values())


def test_openai_backend_members_on_the_fake_server(serve: Serve) -> None:
    answers = {
        "m1": lambda model, prompt, seed, index: f"Answer: {6 + index % 2}",
        "m2": lambda model, prompt, seed, index: "Answer: 42",
    }
    with run_fake_server(FakeServerConfig(answers=answers)) as (base, fake):
        pool = pool_from_dict(
            {
                "defaults": {"k": 3},
                "models": [
                    {"name": name, "backend": "openai", "base_url": base, "model": name}
                    for name in answers
                ],
            }
        )
        members: list[Member] = members_of(pool)
        assert all(isinstance(m, Member) for m in members)
        with serve(members, close=True) as url:
            reply = client(url).chat.completions.create(model="slm-mux", messages=QUESTION)  # type: ignore[arg-type]
        assert fake.request_count == 2
        assert all(r.body["n"] == 3 for r in fake.requests)
    assert reply.choices[0].message.content == "Answer: 42"
    assert reply.model_extra is not None
    assert reply.model_extra["slm_mux"]["votes"] == {"m1": {"6": 2, "7": 1}, "m2": {"42": 3}}
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == fake.prompt_tokens
    assert reply.usage.completion_tokens == fake.completion_tokens == 12


@pytest.mark.parametrize(("accuracy", "winner"), [({"x": 0.9, "y": 0.1}, "x"), ({"y": 0.8}, "y")])
def test_a_confidence_tie_goes_to_validation_accuracy(
    serve: Serve, accuracy: dict[str, float], winner: str
) -> None:
    members = scripted_pool({"x": {"*": ["Answer: 1"]}, "y": {"*": ["Answer: 2"]}})
    with serve(members, validation_accuracy=accuracy) as url:
        reply = client(url).chat.completions.create(model="slm-mux", messages=QUESTION)  # type: ignore[arg-type]
    assert reply.model_extra is not None
    assert reply.model_extra["slm_mux"]["model"] == winner
    assert reply.choices[0].message.content == f"Answer: {'1' if winner == 'x' else '2'}"
