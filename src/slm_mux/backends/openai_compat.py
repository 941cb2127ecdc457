"""One backend for every OpenAI-compatible chat server.

vLLM, SGLang, llama.cpp, Ollama, LM Studio, Together, OpenRouter and OpenAI
differ only in configuration: base URL, model name, the *name* of the
environment variable holding the API key, and extra headers.

Policy, all ours (the SDK's own retries are off):

* ``n`` samples go in one request. A server that answers with fewer choices,
  or with a 400 that mentions ``n``, is remembered per endpoint (base URL +
  model) as not supporting ``n``; the missing samples, and every later
  request, go as parallel single requests. Single request ``i`` uses seed
  ``seed + i``, so sample 0 keeps the request's seed. What was learned is
  also written to a small cache file (:func:`cache_file`), so the next
  process starts with it instead of paying a second round trip.
* Completions are handed back as they finish (:meth:`OpenAICompatibleBackend.stream`):
  the ``n``-request's choices together, then each single request on its own.
* Backends on the same endpoint share one concurrency limit and one
  requests-per-minute pacing (requests are spaced ``60 / rpm`` seconds apart).
* 408, 409, 429, 5xx, connection errors, timeouts, malformed JSON and empty
  ``choices`` are retried with exponential backoff and jitter, or after the
  server's ``Retry-After`` seconds (both capped at ``backoff_max_s``). Other
  4xx fail at once. Every attempt is bounded by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import tempfile
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
from pydantic import Field

from slm_mux.backends.base import (
    Batch,
    Completion,
    GenerationRequest,
    Price,
    Usage,
    gather_stream,
    split_tokens,
)
from slm_mux.backends.config import ModelBase
from slm_mux.errors import BackendError, InputError

# A 400 saying n > 1 is unsupported: "n must be 1", "Unknown parameter: n", "only one
# completion choice": the parameter as a word of its own, not "tool_choice" or "n_predict".
_REJECTS_N = re.compile(
    r"(?<![A-Za-z0-9_'])'?n'?(?![A-Za-z0-9_])|(?:only|one|single) (?:completion )?choice",
    re.IGNORECASE,
)
_RETRY_STATUSES = frozenset({408, 409, 429})


class _Retryable(Exception):
    """An attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _NUnsupported(Exception):
    """The server rejected ``n > 1``."""


def cache_file() -> Path:
    """Where learned ``n`` support is kept: ``$XDG_CACHE_HOME/slm-mux/endpoints.json``.

    ``XDG_CACHE_HOME`` defaults to ``~/.cache``. The file maps
    ``"<base_url> <model>"`` to ``true`` or ``false``; delete it to forget.
    """
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "slm-mux" / "endpoints.json"


def _read_cache() -> dict[str, bool]:
    """The cached ``n`` support per endpoint; an unreadable file counts as empty."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: value for key, value in data.items() if isinstance(value, bool)}


def _write_cache(key: str, supports_n: bool) -> None:
    """Remember ``supports_n`` for ``key``, atomically; an unwritable cache is skipped."""
    path = cache_file()
    known = _read_cache()
    if known.get(key) is supports_n:
        return
    known[key] = supports_n
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
        ) as handle:
            json.dump(known, handle, indent=1, sort_keys=True)
        os.replace(handle.name, path)


@dataclass(eq=False)
class _Endpoint:
    """State shared by every backend that talks to one base URL + model."""

    key: str
    max_concurrency: int
    requests_per_minute: float | None
    supports_n: bool | None
    next_slot: float = 0.0
    semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def semaphore(self) -> asyncio.Semaphore:
        """The concurrency limit for the running event loop."""
        loop = asyncio.get_running_loop()
        if loop not in self.semaphores:
            self.semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        return self.semaphores[loop]

    async def pace(self) -> float:
        """Wait for this request's slot under the requests-per-minute limit; the seconds waited."""
        if self.requests_per_minute is None:
            return 0.0
        now = time.monotonic()
        slot = max(now, self.next_slot)
        self.next_slot = slot + 60.0 / self.requests_per_minute
        if slot > now:
            await asyncio.sleep(slot - now)
        return slot - now

    def learn(self, supports_n: bool) -> None:
        """Record whether the server honours ``n``, here and in the cache file."""
        self.supports_n = supports_n
        _write_cache(self.key, supports_n)


_ENDPOINTS: weakref.WeakValueDictionary[tuple[str, str], _Endpoint] = weakref.WeakValueDictionary()


def _endpoint(
    name: str,
    base_url: str,
    model: str,
    max_concurrency: int,
    requests_per_minute: float | None,
    supports_n: bool | None,
) -> _Endpoint:
    """The shared state of ``base_url`` + ``model``.

    Limits must agree across backends; a configured ``supports_n`` overrides
    what is known so far (in this process, else in the cache file).
    """
    key = (base_url, model)
    found = _ENDPOINTS.get(key)
    if found is None:
        cache_key = f"{base_url} {model}"
        if supports_n is None:
            supports_n = _read_cache().get(cache_key)
        found = _Endpoint(cache_key, max_concurrency, requests_per_minute, supports_n)
        _ENDPOINTS[key] = found
        return found
    if supports_n is not None:
        found.supports_n = supports_n
    if (found.max_concurrency, found.requests_per_minute) != (max_concurrency, requests_per_minute):
        raise InputError(
            f"model {name!r}: max_concurrency={max_concurrency}, requests_per_minute="
            f"{requests_per_minute} differ from another model on {base_url} ({model}): "
            f"{found.max_concurrency}, {found.requests_per_minute}"
        )
    return found


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header, or ``None`` when absent or not a number."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (1-based): half fixed, half jitter, doubling each time."""
    ceiling = min(max_s, base_s * 2.0 ** (attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _server_message(error: openai.APIStatusError) -> str:
    """The server's own error message."""
    body = error.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return _one_line(body["message"])
    if isinstance(body, str) and body.strip():
        return _one_line(body)
    return _one_line(error.response.text) or error.response.reason_phrase


def _completions(payload: bytes, latency_s: float) -> list[Completion]:
    """Completions from a chat-completion response body; ``_Retryable`` when malformed."""
    try:
        data = json.loads(payload)
    except ValueError:
        raise _Retryable("malformed JSON in response") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        raise _Retryable("malformed response: no 'choices' list")
    if not choices:
        raise _Retryable("response has empty 'choices'")
    texts: list[str] = []
    reasons: list[str | None] = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise _Retryable("malformed response: a choice has no 'message'")
        content = message.get("content")
        texts.append(content if isinstance(content, str) else "")
        reason = choice.get("finish_reason")
        reasons.append(reason if isinstance(reason, str) else None)
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    prompt_shares = split_tokens(prompt if isinstance(prompt, int) else None, [1] * len(texts))
    completion_shares = split_tokens(
        completion if isinstance(completion, int) else None, [len(t) for t in texts]
    )
    return [
        Completion(text, p, c, latency_s, reason)
        for text, p, c, reason in zip(texts, prompt_shares, completion_shares, reasons, strict=True)
    ]


class OpenAICompatibleBackend:
    """A model behind any OpenAI-compatible ``/chat/completions`` endpoint.

    ``api_key_env`` names the environment variable that holds the key (read
    once, here; never stored elsewhere); without it a placeholder key is sent,
    which local servers ignore. ``supports_n``: ``None`` detects and remembers,
    ``False`` always sends single requests, ``True`` always asks for ``n``
    (missing choices are still topped up with single requests). Token counts
    follow :mod:`slm_mux.backends.base`: the prompt is split evenly across the
    choices of a response, the completion tokens in proportion to each
    choice's text length. ``latency_s`` is the successful attempt's duration.
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_concurrency: int = 16,
        requests_per_minute: float | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        supports_n: bool | None = None,
        price: Price | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        api_key = "unused"
        if api_key_env is not None:
            value = os.environ.get(api_key_env)
            if not value:
                raise InputError(f"model {name!r}: environment variable {api_key_env} is not set")
            api_key = value
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.price = price
        self.usage = Usage()
        self.waits: deque[tuple[str, float]] = deque(maxlen=256)
        """The latest waits before an attempt, newest last: ``("retry", s)`` or ``("pace", s)``."""
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._always_n = supports_n is True
        self._endpoint = _endpoint(
            name, self.base_url, model, max_concurrency, requests_per_minute, supports_n
        )
        self._jitter = random.Random(f"retry:{name}")
        self._client_options: dict[str, Any] = {
            "api_key": api_key,
            "base_url": self.base_url,
            "default_headers": dict(headers or {}),
            "max_retries": 0,
            "timeout": timeout_s,
        }
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return (
            f"OpenAICompatibleBackend(name={self.name!r}, base_url={self.base_url!r}, "
            f"model={self.model!r})"
        )

    @property
    def cost_usd(self) -> float | None:
        """What this backend's requests so far cost, or ``None`` without a price."""
        return self.usage.cost_usd(self.price)

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        """Exactly ``request.n`` completions, or raise ``BackendError``."""
        return await gather_stream(self.stream(request), request.n)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Batch]:
        """The ``n``-request's choices as one batch, then each single request as it finishes."""
        if request.n < 1:
            raise ValueError("n must be at least 1")
        endpoint = self._endpoint
        got = 0
        if request.n > 1 and endpoint.supports_n is not False:
            try:
                first = await self._request(request, request.n, request.seed)
            except _NUnsupported:
                endpoint.learn(False)
            else:
                first = first[: request.n]
                got = len(first)
                if got == request.n and endpoint.supports_n is None:
                    endpoint.learn(True)
                elif got < request.n and not self._always_n:
                    endpoint.learn(False)
                self.usage.add(first)
                yield list(enumerate(first))
        async for batch in self._singles(request, start=got):
            yield batch

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    async def _singles(self, request: GenerationRequest, start: int) -> AsyncIterator[Batch]:
        """Samples ``start .. n-1`` as parallel single requests, each yielded as it finishes."""

        async def single(index: int) -> tuple[int, Completion]:
            seed = None if request.seed is None else request.seed + index
            return index, (await self._request(request, 1, seed))[0]

        tasks = [asyncio.ensure_future(single(i)) for i in range(start, request.n)]
        try:
            for finished in asyncio.as_completed(tasks):
                index, completion = await finished
                self.usage.add([completion])
                yield [(index, completion)]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = openai.AsyncOpenAI(**self._client_options)
            self._clients[loop] = client
        return client

    async def _request(
        self, request: GenerationRequest, n: int, seed: int | None
    ) -> list[Completion]:
        """One request for ``n`` choices, retried: at least one choice, or ``BackendError``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if n > 1:
            body["n"] = n
        if seed is not None:
            body["seed"] = seed
        attempt = 1
        while True:
            try:
                return await self._attempt(body)
            except _Retryable as failure:
                if attempt > self.max_retries:
                    raise BackendError(
                        f"model {self.name!r}: gave up after {attempt} attempts at "
                        f"{self.base_url}: {failure}"
                    ) from None
                delay = failure.retry_after
                if delay is None:
                    delay = backoff_delay(
                        attempt, self.backoff_base_s, self.backoff_max_s, self._jitter
                    )
                self.waits.append(("retry", min(delay, self.backoff_max_s)))
                await asyncio.sleep(min(delay, self.backoff_max_s))
                attempt += 1

    async def _attempt(self, body: dict[str, Any]) -> list[Completion]:
        """One HTTP round trip under the endpoint's limits."""
        client = self._client()
        async with self._endpoint.semaphore():
            paced = await self._endpoint.pace()
            if paced > 0:
                self.waits.append(("pace", paced))
            started = time.monotonic()
            try:
                # The SDK's generic ``post`` skips its per-field request transform,
                # the largest share of client CPU per request.
                response = await asyncio.wait_for(
                    client.post("/chat/completions", body=body, cast_to=httpx.Response),
                    self.timeout_s,
                )
            except (asyncio.TimeoutError, openai.APITimeoutError):
                raise _Retryable(f"no response within {self.timeout_s:g}s") from None
            except openai.APIConnectionError as error:
                cause = error.__cause__ or error
                raise _Retryable(
                    f"connection error: {_one_line(str(cause)) or type(cause).__name__}"
                ) from None
            except openai.APIStatusError as error:
                raise self._status_failure(error, body) from None
            latency = time.monotonic() - started
        return _completions(response.content, latency)

    def _status_failure(self, error: openai.APIStatusError, body: dict[str, Any]) -> Exception:
        """What an HTTP error status means for us: retry, fall back from ``n``, or fail."""
        status = error.status_code
        message = _server_message(error)
        if status in _RETRY_STATUSES or status >= 500:
            retry_after = parse_retry_after(error.response.headers.get("retry-after"))
            return _Retryable(f"{status}: {message}", retry_after)
        if status == 400 and "n" in body and not self._always_n and _REJECTS_N.search(message):
            return _NUnsupported(message)
        return BackendError(f"model {self.name!r}: {status} from {self.base_url}: {message}")


class OpenAIConfig(ModelBase):
    """A pool entry with ``backend: openai``: a model behind an OpenAI-compatible server."""

    backend: Literal["openai"] = Field(description="openai: an OpenAI-compatible server.")
    base_url: str = Field(description="Server URL, e.g. http://host:8000/v1.")
    model: str = Field(description="The model name the server knows.")
    api_key_env: str | None = Field(
        default=None, description="NAME of the environment variable holding the API key."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="Extra HTTP headers (no secrets)."
    )
    max_concurrency: int = Field(default=16, ge=1, description="Most requests in flight.")
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="Request rate limit per endpoint; null for none."
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Seconds before an attempt ends.")
    max_retries: int = Field(default=4, ge=0, description="Retries after a failed attempt.")
    supports_n: bool | None = Field(
        default=None,
        description="Whether the server honours n; null to detect it (and cache what was learned).",
    )

    def identity(self) -> dict[str, Any]:
        """The served model's name."""
        return {"model": self.model}

    def build(self) -> OpenAICompatibleBackend:
        """The backend; reads the API key from ``api_key_env``, if set."""
        return OpenAICompatibleBackend(
            self.name,
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            headers=self.headers,
            max_concurrency=self.max_concurrency,
            requests_per_minute=self.requests_per_minute,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            supports_n=self.supports_n,
            price=self.price.price() if self.price is not None else None,
        )
