"""The OpenAI chat-completions wire format: requests checked, replies and stream chunks built.

Nothing here touches a model or a socket: :func:`parse_request` turns a request body
into a :class:`ChatRequest` or raises :class:`ApiError` (an OpenAI-style 4xx), and
:func:`completion` / :func:`chunks` turn a :class:`~slm_mux.engine.Answer` into the
reply object or its ``chat.completion.chunk`` stream.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from slm_mux.defaults import MAX_K, MAX_SEED
from slm_mux.engine import Answer
from slm_mux.methods import live_methods, sampled_live_methods
from slm_mux.server.failures import public_failures
from slm_mux.server.stops import MAX_STOPS, cut
from slm_mux.tasks.base import empty_question

MAX_N = 128
"""Most replies a pass-through request may ask for (OpenAI's own limit)."""
ROLES = ("system", "developer", "user", "assistant")

NEUTRAL: Mapping[str, object] = {
    "top_p": 1,
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "logprobs": False,
    "store": False,
    "parallel_tool_calls": True,
}
"""Fields accepted only with the value that changes nothing (any other value is a 400)."""
IGNORED = frozenset({"user", "metadata", "service_tier"})
"""Fields that never change an answer: accepted with any value."""


class ApiError(Exception):
    """A request the server refuses: an HTTP status and an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``, as the OpenAI API answers."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat-completion request: what :func:`slm_mux.live.answer` needs, and how
    to reply (streamed or not, with a usage chunk or not)."""

    model: str
    messages: list[dict[str, str]]
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    k: int | None = None
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()


def _invalid(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


def _integer(body: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(key, f"expected an integer from {low} to {high}, got {value!r}")
    return value


def _content(index: int, content: object) -> str:
    """A message's text: a string, or the ``text`` parts of a content list joined."""
    if isinstance(content, str):
        return content
    param = f"messages[{index}].content"
    if not isinstance(content, list):
        raise _invalid(param, "expected a string or a list of text parts")
    texts = []
    for part in content:
        if not (isinstance(part, dict) and part.get("type") == "text"):
            raise _invalid(param, "only text parts are supported")
        text = part.get("text")
        if not isinstance(text, str):
            raise _invalid(param, "a text part needs a string 'text'")
        texts.append(text)
    return "".join(texts)


def _stop(value: object) -> tuple[str, ...]:
    """The stop sequences: a string, or a list of up to :data:`MAX_STOPS` strings."""
    sequences = [value] if isinstance(value, str) else value
    if not (
        isinstance(sequences, list)
        and len(sequences) <= MAX_STOPS
        and all(isinstance(sequence, str) and sequence for sequence in sequences)
    ):
        raise _invalid("stop", f"expected a non-empty string or a list of up to {MAX_STOPS}")
    return tuple(sequences)


def _messages(value: object) -> list[dict[str, str]]:
    if value is None:
        raise ApiError(
            400,
            "messages: a required field is missing",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(value, list) or not value:
        raise _invalid("messages", "expected a non-empty list of messages")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise _invalid(f"messages[{index}]", "expected an object with 'role' and 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise _invalid(f"messages[{index}].role", f"expected one of {', '.join(ROLES)}")
        extra = sorted(set(message) - {"role", "content", "name"})
        if extra:
            raise _invalid(f"messages[{index}].{extra[0]}", "not supported")
        # A developer message is the newer name of a system message.
        messages.append(
            {
                "role": "system" if role == "developer" else str(role),
                "content": _content(index, message.get("content")),
            }
        )
    last = next((i for i in reversed(range(len(messages))) if messages[i]["role"] == "user"), None)
    if last is None:
        raise _invalid("messages", "no user message to answer")
    problem = empty_question(messages[last]["content"])
    if problem is not None:
        raise _invalid(f"messages[{last}].content", problem)
    return messages


def parse_request(raw: bytes, models: Collection[str]) -> ChatRequest:
    """Check a chat-completion request body against the models served.

    Raises :class:`ApiError`: 400 for malformed JSON or an invalid field (naming it),
    404 ``model_not_found`` for a model not in ``models``. ``n`` above 1 is for a
    pool model only (a method chooses one answer per request); ``stop`` sequences
    cut the replies (and, for a method, each sample before its answer is extracted).
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    body = {key: value for key, value in body.items() if value is not None}
    for key, value in body.items():
        if key in NEUTRAL and value != NEUTRAL[key]:
            raise _invalid(key, f"only {NEUTRAL[key]!r} is supported, got {value!r}")
        if key not in _KNOWN:
            raise ApiError(
                400, f"{key}: unsupported parameter", param=key, code="unsupported_parameter"
            )
    model = body.get("model")
    if model is None:
        raise ApiError(
            400,
            "model: a required field is missing",
            param="model",
            code="missing_required_parameter",
        )
    if not isinstance(model, str):
        raise _invalid("model", f"expected a string, got {model!r}")
    if model not in models:
        raise ApiError(
            404,
            f"the model {model!r} does not exist; choose from {', '.join(models)}",
            param="model",
            code="model_not_found",
        )
    messages = _messages(body.get("messages"))
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (math.isfinite(temperature) and 0 <= temperature <= 2)
    ):
        raise _invalid("temperature", f"expected a number from 0 to 2, got {temperature!r}")
    max_tokens = _integer(body, "max_tokens", 1, 2**31 - 1)
    max_completion = _integer(body, "max_completion_tokens", 1, 2**31 - 1)
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise _invalid("max_completion_tokens", "differs from max_tokens; give one of them")
    n = _integer(body, "n", 1, MAX_N) or 1
    if n > 1 and model in live_methods():
        raise _invalid("n", f"{model!r} chooses one answer per request; n must be 1, got {n}")
    k = _integer(body, "k", 1, MAX_K)
    sampled = sampled_live_methods()
    if k is not None and model not in sampled:
        raise _invalid("k", f"applies to {' and '.join(sampled)} only, not {model!r}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream", f"expected true or false, got {stream!r}")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _invalid("stream_options", "only allowed when stream is true")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise _invalid("stream_options", 'expected {"include_usage": true|false}')
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise _invalid("stream_options.include_usage", "expected true or false")
    return ChatRequest(
        model=model,
        messages=messages,
        temperature=None if temperature is None else float(temperature),
        max_tokens=max_tokens if max_tokens is not None else max_completion,
        seed=_integer(body, "seed", 0, MAX_SEED),
        k=k,
        n=n,
        stream=stream,
        include_usage=include_usage,
        stop=_stop(body["stop"]) if "stop" in body else (),
    )


_KNOWN = frozenset(
    {"model", "messages", "temperature", "max_tokens", "max_completion_tokens", "n", "seed"}
    | {"stop", "stream", "stream_options", "k"}
    | set(NEUTRAL)
    | IGNORED
)


def _usage(live: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": live.prompt_tokens,
        "completion_tokens": live.completion_tokens,
        "total_tokens": live.prompt_tokens + live.completion_tokens,
    }


def selection(live: Answer) -> dict[str, Any]:
    """The reply's ``slm_mux`` field: the answer, winning model, confidence, votes, failures
    (each model's :func:`~slm_mux.server.failures.public_reason`); with an adaptive policy
    also the policy, its rounds and the samples drawn (of full)."""
    adaptive = (
        {
            "adaptive": live.policy,
            "rounds": live.rounds,
            "samples": {"drawn": live.samples_drawn, "full": live.samples_full},
        }
        if live.policy not in (None, "full")
        else {}
    )
    return {
        "answer": live.answer,
        "model": live.model,
        "confidence": live.confidence,
        "votes": live.votes,
        "failed": public_failures(live.failed),
        **adaptive,
    }


def new_id() -> str:
    """A fresh completion id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def replies(live: Answer, stop: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The texts of the reply's choices: a pass-through's ``n``, else the chosen one; each
    cut at the first ``stop`` sequence."""
    return tuple(cut(text, stop) for text in live.texts or (live.text,))


def completion(model: str, live: Answer, stop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``chat.completion`` object for ``live``, answered as ``model``, its replies cut at
    ``stop``."""
    return {
        "id": new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
            for index, text in enumerate(replies(live, stop))
        ],
        "usage": _usage(live),
        "slm_mux": selection(live),
    }


_PIECE = re.compile(r"\s*\S+\s*|\s+")
PIECE_CHARS = 64
"""Content chunks carry whole words, about this many characters each."""


def pieces(text: str) -> list[str]:
    """``text`` cut at word ends into pieces of about :data:`PIECE_CHARS` characters."""
    out: list[str] = []
    for word in _PIECE.findall(text):
        if out and len(out[-1]) + len(word) <= PIECE_CHARS:
            out[-1] += word
        else:
            out.append(word)
    return out


def chunks(
    model: str, live: Answer, *, include_usage: bool, stop: tuple[str, ...] = ()
) -> Iterator[bytes]:
    """The SSE events of a streamed reply, ``data: [DONE]`` last.

    Per choice, a role chunk, its text in content chunks and a chunk with
    ``finish_reason``; the last of these also carries the ``slm_mux`` field. With
    ``include_usage`` every chunk carries ``"usage": null`` and one more chunk with
    ``choices: []`` carries the usage. Replies are cut at ``stop``.
    """
    head = {"id": new_id(), "object": "chat.completion.chunk", "created": int(time.time())}
    head["model"] = model
    usage: dict[str, None] = {"usage": None} if include_usage else {}

    def event(payload: Mapping[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({**head, **payload}) + b"\n\n"

    def choice(index: int, delta: Mapping[str, str], finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}

    texts = replies(live, stop)
    for index, text in enumerate(texts):
        yield event({"choices": [choice(index, {"role": "assistant", "content": ""})], **usage})
        for piece in pieces(text):
            yield event({"choices": [choice(index, {"content": piece})], **usage})
        last = {"slm_mux": selection(live)} if index == len(texts) - 1 else {}
        yield event({"choices": [choice(index, {}, "stop")], **usage, **last})
    if include_usage:
        yield event({"choices": [], "usage": _usage(live)})
    yield b"data: [DONE]\n\n"
