"""A small OpenAI-compatible chat server for tests and benchmarks.

It answers ``POST /v1/chat/completions`` deterministically from an answer
function per model, serves ``GET /v1/models``, records every request, and
misbehaves on demand: push :class:`Fault` objects onto :attr:`FakeServer.faults`
and each following request consumes one. :func:`run_fake_server` runs it with
uvicorn on a free loopback port in a background thread::

    with run_fake_server(FakeServerConfig(honour_n=False)) as (base_url, server):
        server.faults.push(Fault.error(429, retry_after=0.5))
        ...  # point a client at base_url
        assert server.request_count == 2

Token counts in ``usage`` are whitespace-separated words.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

AnswerFn = Callable[[str, str, int | None, int], str]
"""Text of one choice from ``(model, last user message, seed, choice index)``."""


def echo_answer(model: str, prompt: str, seed: int | None, index: int) -> str:
    """The default answer: states the model, seed, choice index and prompt."""
    return f"{model} seed={seed} choice={index}: {prompt}"


FaultKind = Literal[
    "error",
    "echo_authorization",
    "slow",
    "malformed_json",
    "empty_choices",
    "drop_connection",
    "reply",
]


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, applied to one request. Build with the class methods."""

    kind: FaultKind
    status: int = 500
    message: str = "injected failure"
    retry_after: float | None = None
    delay_s: float = 0.0
    body: bytes = b""

    @classmethod
    def error(
        cls, status: int, message: str = "injected failure", *, retry_after: float | None = None
    ) -> Fault:
        """Answer with an HTTP error in OpenAI's error shape (and a ``Retry-After`` header)."""
        return cls("error", status=status, message=message, retry_after=retry_after)

    @classmethod
    def echo_authorization(cls, status: int = 401) -> Fault:
        """Answer with an HTTP error whose message quotes the request's ``Authorization``
        header, as some proxies do (to test that clients keep keys out of their errors)."""
        return cls("echo_authorization", status=status)

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        """Wait ``delay_s`` seconds (or until the client leaves), then answer normally."""
        return cls("slow", delay_s=delay_s)

    @classmethod
    def malformed_json(cls) -> Fault:
        """Answer 200 with a truncated JSON body."""
        return cls("malformed_json")

    @classmethod
    def empty_choices(cls) -> Fault:
        """Answer 200 with a well-formed completion that has no choices."""
        return cls("empty_choices")

    @classmethod
    def reply(cls, body: bytes) -> Fault:
        """Answer 200 with ``body`` as a JSON reply, whatever it holds."""
        return cls("reply", body=body)

    @classmethod
    def drop_connection(cls) -> Fault:
        """Send the status line and headers, then close the connection without a body."""
        return cls("drop_connection")


class FaultQueue:
    """Faults waiting for the next requests, first pushed first applied (thread-safe);
    once they are used up, random faults at the rate :meth:`randomly` set (none by default)."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._random: tuple[Fault, float, random.Random] | None = None

    def push(self, *faults: Fault) -> None:
        """Apply ``faults`` to the next requests, one each."""
        self._queue.extend(faults)

    def randomly(self, fault: Fault, rate: float, *, seed: int = 0) -> None:
        """Apply ``fault`` to each request with probability ``rate`` (seeded) once the
        pushed faults are used up."""
        self._random = (fault, rate, random.Random(seed))

    def pop(self) -> Fault | None:
        """The fault for the request arriving now, if any."""
        try:
            return self._queue.popleft()
        except IndexError:
            pass
        if self._random is None:
            return None
        fault, rate, rng = self._random
        return fault if rng.random() < rate else None

    def __len__(self) -> int:
        return len(self._queue)


@dataclass
class FakeServerConfig:
    """How the fake server answers.

    ``answers`` maps a model name (or ``"*"`` for any other) to its answer
    function; a model matching neither gets a 404. With ``honour_n`` off the
    server returns one choice whatever ``n`` asks; with ``reject_n`` on it
    answers 400 to any ``n > 1``. ``latency_s`` delays every answer;
    ``api_key`` (when set) is the bearer token every request must carry.
    """

    answers: Mapping[str, AnswerFn] = field(default_factory=lambda: {"*": echo_answer})
    honour_n: bool = True
    reject_n: bool = False
    latency_s: float = 0.0
    api_key: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """A chat-completion request as received: its JSON body and (lower-case) headers."""

    body: dict[str, Any]
    headers: dict[str, str]


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _words(text: str) -> int:
    return len(text.split())


class _DroppedResponse(Response):
    """Starts a response that promises a body, then returns; the server closes the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )


async def _wait(request: Request, seconds: float) -> None:
    """Sleep ``seconds``, returning early if the client disconnects."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(disconnected(), seconds)


class FakeServer:
    """The fake server's ASGI app and what it has seen so far.

    ``requests`` holds every chat-completion request received, in arrival
    order; ``answered`` counts the completions (choices) it has answered with;
    ``responses`` the successful responses (a faulty one is not counted), and
    ``prompt_tokens``/``completion_tokens`` the sums of their reported
    ``usage``; ``max_in_flight`` is the most requests it was handling at once.
    """

    def __init__(self, config: FakeServerConfig | None = None) -> None:
        self.config = config or FakeServerConfig()
        self.faults = FaultQueue()
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.answered = 0
        self.responses = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/stats", self._stats, methods=["GET"]),
            ]
        )

    @property
    def request_count(self) -> int:
        """How many chat-completion requests arrived."""
        return len(self.requests)

    async def _stats(self, request: Request) -> JSONResponse:
        return JSONResponse({"requests": self.request_count, "max_in_flight": self.max_in_flight})

    async def _models(self, request: Request) -> JSONResponse:
        names = [name for name in self.config.answers if name != "*"]
        data = [{"id": name, "object": "model", "owned_by": "fake"} for name in names]
        return JSONResponse({"object": "list", "data": data})

    async def _chat(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.requests.append(
            RecordedRequest(body if isinstance(body, dict) else {}, dict(request.headers))
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, body)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: Request, body: object) -> Response:
        fault = self.faults.pop()
        if fault is not None and fault.kind == "echo_authorization":
            return _error(fault.status, f"bad key {request.headers.get('authorization')}")
        if fault is not None and fault.kind != "slow":
            return self._faulty(fault)
        config = self.config
        if (
            config.api_key is not None
            and request.headers.get("authorization") != f"Bearer {config.api_key}"
        ):
            return _error(401, "invalid api key")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        model, messages = body.get("model"), body.get("messages")
        n = 1 if body.get("n") is None else body["n"]
        if not isinstance(model, str) or not isinstance(messages, list) or not messages:
            return _error(400, "'model' and a non-empty 'messages' list are required")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            return _error(400, "'n' must be a positive integer")
        if body.get("stream"):
            return _error(400, "streaming is not supported")
        answer = config.answers.get(model) or config.answers.get("*")
        if answer is None:
            return _error(404, f"model '{model}' not found")
        delay = config.latency_s + (fault.delay_s if fault is not None else 0.0)
        if delay > 0:
            await _wait(request, delay)
        if n > 1 and config.reject_n:
            return _error(400, "n > 1 is not supported, use n=1")
        prompt = next(
            (
                str(m.get("content", ""))
                for m in reversed(messages)
                if isinstance(m, dict) and m.get("role") == "user"
            ),
            "",
        )
        seed = body.get("seed")
        max_tokens = body.get("max_tokens")
        choices: list[dict[str, Any]] = []
        for index in range(n if config.honour_n else 1):
            text, finish = answer(model, prompt, seed, index), "stop"
            if isinstance(max_tokens, int) and _words(text) > max_tokens:
                text, finish = " ".join(text.split()[:max_tokens]), "length"
            message = {"role": "assistant", "content": text}
            choices.append(
                {"index": index, "message": message, "finish_reason": finish, "logprobs": None}
            )
        prompt_tokens = sum(
            _words(str(m.get("content", ""))) for m in messages if isinstance(m, dict)
        )
        completion_tokens = sum(_words(c["message"]["content"]) for c in choices)
        self.answered += len(choices)
        self.responses += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        return JSONResponse(
            {
                "id": f"chatcmpl-fake-{self.request_count}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    def _faulty(self, fault: Fault) -> Response:
        if fault.kind == "error":
            headers = (
                {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            )
            return _error(fault.status, fault.message, headers)
        if fault.kind == "malformed_json":
            return Response(
                b'{"id": "chatcmpl-fake", "choices": [{"ind', media_type="application/json"
            )
        if fault.kind == "reply":
            return Response(fault.body, media_type="application/json")
        if fault.kind == "empty_choices":
            return JSONResponse({"id": "chatcmpl-fake", "object": "chat.completion", "choices": []})
        return _DroppedResponse()


@contextmanager
def run_fake_server(
    config: FakeServerConfig | None = None, *, port: int = 0
) -> Iterator[tuple[str, FakeServer]]:
    """Serve a :class:`FakeServer` on 127.0.0.1; yields ``(base_url, server)``.

    ``port`` 0 takes a free port; another port (say, that of a server stopped
    earlier, to bring it back) is bound with ``SO_REUSEADDR``. ``base_url`` ends
    in ``/v1``. The server runs in a daemon thread with its own event loop and
    is stopped on exit, closing its connections. Uvicorn's loggers are set to
    ``critical`` (process-wide), so injected faults do not print tracebacks.
    """
    server = FakeServer(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(
        uvicorn.Config(
            server.app,
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="critical",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(
        target=uv.run, kwargs={"sockets": [sock]}, daemon=True, name=f"fake-server-{port}"
    )
    thread.start()
    deadline = time.monotonic() + 10.0
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"fake server on port {port} did not start")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}/v1", server
    finally:
        uv.should_exit = True
        thread.join(timeout=10.0)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    """Serve the fake server in the foreground: ``python -m slm_mux.testing.fake_server``."""
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible chat server.")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--ignore-n", action="store_true", help="answer one choice whatever n")
    args = parser.parse_args(argv)
    server = FakeServer(FakeServerConfig(honour_n=not args.ignore_n, latency_s=args.latency))
    uvicorn.run(
        server.app,
        host="127.0.0.1",
        port=args.port,
        http="h11",
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
