"""A backend that answers from a script: deterministic, for tests and examples."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from slm_mux.backends.base import (
    Batch,
    Completion,
    GenerationRequest,
    Usage,
    gather_stream,
    split_tokens,
)
from slm_mux.backends.config import ModelBase
from slm_mux.errors import BackendError, InputError

ScriptFn = Callable[[str, int], str]
"""Text of sample ``index`` for a question: ``(last user message, index) -> text``."""

Script = Mapping[str, Sequence[str]] | ScriptFn
"""Either a :data:`ScriptFn`, or responses keyed by a question substring (``"*"`` for any)."""


def last_user_message(messages: Sequence[Mapping[str, str]]) -> str:
    """The content of the last ``user`` message (empty when there is none)."""
    return next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")


class ScriptedBackend:
    """Answers from ``script``, after ``latency_s`` seconds.

    With a mapping, the first key (in order, ``"*"`` last) found in the last
    user message picks the responses, and sample ``i`` of every request gets
    response ``i`` modulo their number; the seed is ignored. Token counts are
    whitespace-separated words, the prompt's split across the samples.
    ``requests`` records every request received.
    """

    def __init__(self, name: str, script: Script, *, latency_s: float = 0.0) -> None:
        if not callable(script):
            empty = [key for key, responses in script.items() if not responses]
            if empty:
                raise InputError(f"model {name!r}: script entry {empty[0]!r} has no responses")
        self.name = name
        self.script = script
        self.latency_s = latency_s
        self.usage = Usage()
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        """``request.n`` scripted completions."""
        return await gather_stream(self.stream(request), request.n)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Batch]:
        """All ``request.n`` scripted completions in one batch."""
        self.requests.append(request)
        prompt = last_user_message(request.messages)
        script = self.script
        if callable(script):
            texts = [script(prompt, i) for i in range(request.n)]
        else:
            responses = self._responses(script, prompt)
            texts = [responses[i % len(responses)] for i in range(request.n)]
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        prompt_words = sum(len(m.get("content", "").split()) for m in request.messages)
        shares = split_tokens(prompt_words, [1] * request.n)
        completions = [
            Completion(text, share, len(text.split()), self.latency_s, "stop")
            for text, share in zip(texts, shares, strict=True)
        ]
        self.usage.add(completions)
        yield list(enumerate(completions))

    async def aclose(self) -> None:
        """Nothing to release."""

    def _responses(self, script: Mapping[str, Sequence[str]], prompt: str) -> Sequence[str]:
        for key, responses in script.items():
            if key != "*" and key in prompt:
                return responses
        if "*" in script:
            return script["*"]
        raise BackendError(f"model {self.name!r}: no scripted answer for {prompt[:60]!r}")


class ScriptedConfig(ModelBase):
    """A pool entry with ``backend: scripted``: answers from a script, for tests and examples."""

    backend: Literal["scripted"] = Field(description="scripted: answers from a script.")
    script: dict[str, list[str]] = Field(
        description='Responses by question substring ("*" for any), cycled.'
    )
    latency_s: float = Field(default=0.0, ge=0, description="Seconds to wait per request.")

    def identity(self) -> dict[str, Any]:
        """The script itself."""
        return {"script": self.script}

    def build(self) -> ScriptedBackend:
        """The backend."""
        return ScriptedBackend(self.name, self.script, latency_s=self.latency_s)
