"""Every refused request: an OpenAI-style 4xx naming the field, no model called, no 500."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from slm_mux.backends.base import Batch, Completion, GenerationRequest, gather_stream
from slm_mux.errors import InputError
from slm_mux.members import Member
from slm_mux.server import create_app
from slm_mux.tasks import get_task

from .helpers import Serve, backends, scripted_pool

USER = [{"role": "user", "content": "What is 2+2?"}]

# (what is wrong, request body, status, the field named (param), code)
REFUSED: list[tuple[str, Any, int, str | None, str | None]] = [
    ("not a JSON object", [1, 2], 400, None, None),
    ("no model", {"messages": USER}, 400, "model", "missing_required_parameter"),
    ("model not a string", {"model": 3, "messages": USER}, 400, "model", "invalid_value"),
    ("unknown model", {"model": "gpt-9", "messages": USER}, 404, "model", "model_not_found"),
    ("no messages", {"model": "slm-mux"}, 400, "messages", "missing_required_parameter"),
    ("empty messages", {"model": "slm-mux", "messages": []}, 400, "messages", "invalid_value"),
    ("no user message", {"model": "slm-mux", "messages": [{"role": "system", "content": "x"}]},
     400, "messages", "invalid_value"),
    ("unknown role", {"model": "slm-mux", "messages": [{"role": "robot", "content": "x"}]},
     400, "messages[0].role", "invalid_value"),
    ("content not text", {"model": "slm-mux", "messages": [{"role": "user", "content": 5}]},
     400, "messages[0].content", "invalid_value"),
    ("image part", {"model": "slm-mux", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]},
     400, "messages[0].content", "invalid_value"),
    ("tool calls", {"model": "slm-mux", "messages": [{"role": "user", "content": "x",
                                                      "tool_calls": []}]},
     400, "messages[0].tool_calls", "invalid_value"),
    ("temperature too high", {"model": "slm-mux", "messages": USER, "temperature": 2.5},
     400, "temperature", "invalid_value"),
    ("temperature a string", {"model": "slm-mux", "messages": USER, "temperature": "hot"},
     400, "temperature", "invalid_value"),
    ("max_tokens zero", {"model": "slm-mux", "messages": USER, "max_tokens": 0},
     400, "max_tokens", "invalid_value"),
    ("two token limits", {"model": "slm-mux", "messages": USER, "max_tokens": 5,
                          "max_completion_tokens": 6},
     400, "max_completion_tokens", "invalid_value"),
    ("n for the mux", {"model": "slm-mux", "messages": USER, "n": 2}, 400, "n", "invalid_value"),
    ("n for a method", {"model": "debate", "messages": USER, "n": 3}, 400, "n", "invalid_value"),
    ("n zero", {"model": "alpha", "messages": USER, "n": 0}, 400, "n", "invalid_value"),
    ("n true", {"model": "alpha", "messages": USER, "n": True}, 400, "n", "invalid_value"),
    ("stop empty", {"model": "slm-mux", "messages": USER, "stop": [""]},
     400, "stop", "invalid_value"),
    ("five stops", {"model": "slm-mux", "messages": USER, "stop": list("abcde")},
     400, "stop", "invalid_value"),
    ("stop a number", {"model": "slm-mux", "messages": USER, "stop": 3},
     400, "stop", "invalid_value"),
    ("logprobs", {"model": "alpha", "messages": USER, "logprobs": True},
     400, "logprobs", "invalid_value"),
    ("top_logprobs", {"model": "alpha", "messages": USER, "top_logprobs": 2},
     400, "top_logprobs", "unsupported_parameter"),
    ("seed negative", {"model": "slm-mux", "messages": USER, "seed": -1},
     400, "seed", "invalid_value"),
    ("k zero", {"model": "slm-mux", "messages": USER, "k": 0}, 400, "k", "invalid_value"),
    ("k for a pool model", {"model": "alpha", "messages": USER, "k": 2},
     400, "k", "invalid_value"),
    ("stream not a bool", {"model": "slm-mux", "messages": USER, "stream": "yes"},
     400, "stream", "invalid_value"),
    ("stream_options without stream", {"model": "slm-mux", "messages": USER,
                                       "stream_options": {"include_usage": True}},
     400, "stream_options", "invalid_value"),
    ("include_usage not a bool", {"model": "slm-mux", "messages": USER, "stream": True,
                                  "stream_options": {"include_usage": "y"}},
     400, "stream_options.include_usage", "invalid_value"),
    ("unsupported field", {"model": "slm-mux", "messages": USER, "tools": [{"type": "function"}]},
     400, "tools", "unsupported_parameter"),
    ("top_p changed", {"model": "slm-mux", "messages": USER, "top_p": 0.5},
     400, "top_p", "invalid_value"),
    # One rule with ask (tasks.base.empty_question): the last user message needs text.
    ("empty question", {"model": "slm-mux", "messages": [{"role": "user", "content": ""}]},
     400, "messages[0].content", "invalid_value"),
    ("blank question", {"model": "alpha", "messages": [{"role": "user", "content": " \n\t"}]},
     400, "messages[0].content", "invalid_value"),
    ("no text parts", {"model": "slm-mux", "messages": [{"role": "user", "content": []}]},
     400, "messages[0].content", "invalid_value"),
    ("empty last question", {"model": "debate", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": "  "}]},
     400, "messages[3].content", "invalid_value"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "status", "param", "code"), REFUSED, ids=lambda x: x)
def test_a_bad_request_is_refused_with_an_openai_error(
    serve: Serve, case: str, body: Any, status: int, param: str | None, code: str | None
) -> None:
    members = scripted_pool()
    with serve(members) as url:
        response = httpx.post(f"{url}/chat/completions", json=body)
    assert response.status_code == status, case
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)
    assert "\n" not in error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["message"].startswith(param) or param in error["message"]
    assert all(b.requests == [] for b in backends(members).values())


def test_neutral_values_of_unused_fields_are_accepted(serve: Serve) -> None:
    body = {"model": "slm-mux", "messages": USER, "top_p": 1, "user": "u1", "logprobs": False}
    body |= {"n": 1, "stop": None, "presence_penalty": 0, "metadata": {"a": "b"}}
    with serve(scripted_pool()) as url:
        response = httpx.post(f"{url}/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"].endswith("Answer: 4")


@pytest.mark.parametrize(
    ("raw", "headers"),
    [(b"{not json", {}), (b"", {}), (b"\xff\xfe", {"content-type": "application/json"})],
)
def test_malformed_json_is_a_400(serve: Serve, raw: bytes, headers: dict[str, str]) -> None:
    with serve(scripted_pool()) as url:
        response = httpx.post(f"{url}/chat/completions", content=raw, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("the request body is not valid JSON")


def test_a_body_over_the_limit_is_a_413_declared_or_streamed(serve: Serve) -> None:
    big = b'{"model": "slm-mux", "messages": [], "pad": "' + b"x" * 5000 + b'"}'

    def chunked() -> Any:
        yield big[:3000]
        yield big[3000:]

    with serve(scripted_pool(), max_body_bytes=4096) as url:
        declared = httpx.post(f"{url}/chat/completions", content=big)
        streamed = httpx.post(f"{url}/chat/completions", content=chunked())
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
    assert "content-length" not in streamed.request.headers


def test_unknown_paths_and_methods_get_openai_errors(serve: Serve) -> None:
    with serve(scripted_pool()) as url:
        missing = httpx.get(f"{url}/embeddings")
        wrong_method = httpx.get(f"{url}/chat/completions")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "GET /v1/embeddings: no such endpoint"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


def test_the_sdk_raises_its_own_error_classes(serve: Serve) -> None:
    with serve(scripted_pool()) as url:
        api = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        with pytest.raises(openai.NotFoundError) as missing:
            api.chat.completions.create(model="gpt-9", messages=USER)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError) as bad:
            api.chat.completions.create(model="slm-mux", messages=USER, n=2)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"
    assert bad.value.param == "n"


def test_a_pool_model_named_like_a_method_is_refused() -> None:
    members = scripted_pool({"debate": {"*": ["Answer: 1"]}})
    with pytest.raises(InputError, match="'debate': the name of a method"):
        create_app(members, task=get_task("exact"))


class Hanging:
    """A backend that never answers and records, thread-safely, that it was cancelled."""

    def __init__(self, name: str, cancelled: threading.Semaphore) -> None:
        self.name = name
        self.started = threading.Semaphore(0)
        self.cancelled = cancelled

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Batch]:
        self.started.release()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.release()
            raise
        yield []  # pragma: no cover - never reached

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return await gather_stream(self.stream(request), request.n)

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.mark.parametrize("model", ["slm-mux", "debate", "alpha"])
def test_a_client_that_disconnects_cancels_its_model_calls(serve: Serve, model: str) -> None:
    cancelled = threading.Semaphore(0)
    hanging = [Hanging(name, cancelled) for name in ("alpha", "beta")]
    members = [Member(backend, k=2) for backend in hanging]
    calls = 1 if model == "alpha" else 2
    body = orjson.dumps({"model": model, "messages": USER, "stream": model == "debate"})
    with serve(members) as url:
        port = int(url.removesuffix("/v1").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}"
            sock.sendall(head.encode() + b"\r\ncontent-type: application/json\r\n\r\n" + body)
            # The request is in flight once every model it asks has been called.
            for backend in hanging[:calls]:
                assert backend.started.acquire(timeout=10)
        # The connection is closed before any response came.
        for _ in range(calls):
            assert cancelled.acquire(timeout=10), "an upstream call was not cancelled"
        assert not cancelled.acquire(timeout=0)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(serve: Serve, scheme: str) -> None:
    with serve(scripted_pool(), api_key="k-1") as url:
        response = httpx.get(f"{url}/models", headers={"authorization": f"{scheme} k-1"})
        wrong = httpx.get(f"{url}/models", headers={"authorization": f"{scheme} k-2"})
        basic = httpx.get(f"{url}/models", headers={"authorization": "Basic k-1"})
    assert response.status_code == 200
    assert wrong.status_code == basic.status_code == 401


def test_without_the_key_unknown_paths_and_methods_are_401_not_404(serve: Serve) -> None:
    with serve(scripted_pool(), api_key="k-1") as url:
        missing = httpx.get(f"{url}/embeddings")
        wrong_method = httpx.get(f"{url}/chat/completions")
        keyed = httpx.get(f"{url}/embeddings", headers={"authorization": "Bearer k-1"})
    assert missing.status_code == wrong_method.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert keyed.status_code == 404
