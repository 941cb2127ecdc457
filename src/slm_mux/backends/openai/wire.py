"""The chat-completion wire format: the request body we send and the replies we read.

Replies come from a server we do not control, so they are read defensively:
every field is type-checked, and data that is not a chat completion raises
:class:`MalformedReply` (a :class:`~slm_mux.errors.BackendError`; the client
retries it). Nothing here catches exceptions broadly, so a bug in this code
surfaces as itself instead of passing for a server's failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slm_mux.backends.base import Completion, GenerationRequest, split_tokens
from slm_mux.errors import BackendError, redact
from slm_mux.tokens import token_count

# A 400 saying n > 1 is unsupported: "n must be 1", "Unknown parameter: n", "only one
# completion choice": the parameter as a word of its own, not "tool_choice" or "n_predict".
REJECTS_N = re.compile(
    r"(?<![A-Za-z0-9_'])'?n'?(?![A-Za-z0-9_])|(?:only|one|single) (?:completion )?choice",
    re.IGNORECASE,
)


CONTROLLED = frozenset(
    {"model", "messages", "temperature", "max_tokens", "max_completion_tokens", "n", "seed"}
    | {"top_p", "top_k", "min_p", "repeat_penalty", "stop", "stream", "stream_options"}
    | {"logprobs"}
)
"""Request fields slm-mux sets itself (or reads the reply of): a pool entry's
``extra_body`` may not hold them."""


class MalformedReply(BackendError):
    """A server's reply is not a chat completion we can read."""


@dataclass(frozen=True)
class ServerSampling:
    """Sampling settings a pool entry pins on its server, sent with every request:
    ``fields`` (its ``top_k``, ``min_p``, ``repeat_penalty``, ``stop`` and ``extra_body``, none of
    them in :data:`CONTROLLED`) and, with ``top_p``, the request's ``top_p`` even at 1."""

    fields: Mapping[str, Any] = field(default_factory=dict)
    top_p: bool = False


NOTHING_PINNED = ServerSampling()


def request_body(
    model: str,
    request: GenerationRequest,
    n: int,
    seed: int | None,
    pinned: ServerSampling = NOTHING_PINNED,
) -> dict[str, Any]:
    """The JSON body asking ``model`` for ``n`` choices (``top_p``, ``n`` and ``seed``
    only when they say something: below 1 or pinned, above 1, given), with the
    ``pinned`` sampling settings."""
    body: dict[str, Any] = {
        **pinned.fields,
        "model": model,
        "messages": request.messages,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    if request.top_p < 1 or pinned.top_p:
        body["top_p"] = request.top_p
    if n > 1:
        body["n"] = n
    if seed is not None:
        body["seed"] = seed
    return body


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header, or ``None`` when absent or not a number."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace collapsed, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _json(payload: bytes) -> object:
    """``payload`` parsed as JSON, or ``None`` when it is not JSON."""
    try:
        parsed: object = json.loads(payload)
    except ValueError:  # also UnicodeDecodeError: bytes that are not text
        return None
    return parsed


def server_message(content: bytes, fallback: str, secrets: Iterable[str] = ()) -> str:
    """A server's own error message from an error reply's body: the JSON
    ``error.message`` (or ``message``), else the body's text, else ``fallback``;
    ``secrets`` are redacted before it is cut to one line (so no part of one is left)."""
    body = _json(content)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return one_line(redact(error["message"], secrets))
    return one_line(redact(content.decode("utf-8", "replace"), secrets)) or fallback


def _count(usage: Mapping[str, object], key: str) -> int | None:
    """A token count from ``usage``, by :func:`slm_mux.tokens.token_count` (else unknown)."""
    return token_count(usage.get(key))


def parse_completions(payload: bytes, latency_s: float) -> list[Completion]:
    """The completions of a chat-completion reply body.

    Raises :class:`MalformedReply` when the body is not JSON, has no ``choices``
    list, an empty one, or a choice without a ``message``. A missing or
    non-string ``content`` reads as empty text and an odd ``finish_reason`` or
    token count as unknown.
    """
    data = _json(payload)
    if data is None:
        raise MalformedReply("malformed JSON in response")
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(choices, list):
        raise MalformedReply("malformed response: no 'choices' list")
    if not choices:
        raise MalformedReply("response has empty 'choices'")
    texts: list[str] = []
    reasons: list[str | None] = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise MalformedReply("malformed response: a choice has no 'message'")
        content = message.get("content")
        texts.append(content if isinstance(content, str) else "")
        reason = choice.get("finish_reason")
        reasons.append(reason if isinstance(reason, str) else None)
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt_shares = split_tokens(_count(usage, "prompt_tokens"), [1] * len(texts))
    completion_shares = split_tokens(
        _count(usage, "completion_tokens"), [len(text) for text in texts]
    )
    return [
        Completion(text, prompt, completion, latency_s, reason)
        for text, prompt, completion, reason in zip(
            texts, prompt_shares, completion_shares, reasons, strict=True
        )
    ]
