"""One backend for every OpenAI-compatible chat server.

vLLM, SGLang, llama.cpp, Ollama, LM Studio, Together, OpenRouter and OpenAI
differ only in configuration: base URL, model name, the *name* of the
environment variable holding the API key, and extra headers.

Policy, all ours (requests go out through :mod:`slm_mux.backends.http`, on aiohttp):

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
* A model may be served by several replicas (``base_urls``); each request goes
  to the least busy one that is not cooling down (:mod:`slm_mux.backends.replicas`),
  through one HTTP client per replica. Each replica is its own endpoint: its own
  concurrency limit, pacing and learned ``n`` support (replicas may run
  different servers); an ``n``-request goes only to replicas not known to
  refuse ``n``.
* 408, 409, 429, 5xx, connection errors, timeouts, malformed JSON and empty
  ``choices`` are retried: the replica that failed cools down for the server's
  ``Retry-After`` seconds or an exponential backoff with jitter (both capped at
  ``backoff_max_s``), and the retry goes to another replica, or waits for the
  first to recover. Other 4xx fail at once. Every attempt is bounded by
  ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from slm_mux.backends.base import (
    Batch,
    Completion,
    GenerationRequest,
    Price,
    Usage,
    gather_stream,
    split_tokens,
)
from slm_mux.backends.config import ModelBase, Strict, key_error
from slm_mux.backends.http import HttpClient, Reply, TransportError
from slm_mux.backends.replicas import Replica, ReplicaSet, ReplicaStats
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
        self.url = ""
        """The replica that failed (set where the attempt was routed)."""


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


def _may_honour_n(endpoint: _Endpoint) -> bool:
    """Whether ``endpoint`` is not known to refuse ``n > 1``."""
    return endpoint.supports_n is not False


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


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _server_message(response: Reply) -> str:
    """The server's own error message: the JSON ``error.message`` (or ``message``), else
    the body's text, else the status's reason."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return _one_line(error["message"])
    return _one_line(response.text) or response.reason


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

    ``base_url`` is one server, or a list of replicas serving the same model,
    each a URL or ``(URL, max_concurrency)``; a bare URL takes ``max_concurrency``.
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str | Sequence[str | tuple[str, int]],
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
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.price = price
        self.usage = Usage()
        self.waits: deque[tuple[str, float]] = deque(maxlen=256)
        """The latest waits before an attempt, newest last: ``("retry", s)`` while every
        replica cooled down, or ``("pace", s)`` under the requests-per-minute limit."""
        self._always_n = supports_n is True
        entries = [base_url] if isinstance(base_url, str) else list(base_url)
        replicas = []
        for entry in entries:
            url, limit = (entry, max_concurrency) if isinstance(entry, str) else entry
            url = url.rstrip("/")
            state = _endpoint(name, url, model, limit, requests_per_minute, supports_n)
            replicas.append(Replica(url, limit, state))
        self.base_urls = [replica.url for replica in replicas]
        self.replicas = ReplicaSet(
            replicas, seed=name, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s
        )
        self._api_key = api_key
        self._headers = dict(headers or {})
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, HttpClient]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        urls = self.base_urls[0] if len(self.base_urls) == 1 else self.base_urls
        return (
            f"OpenAICompatibleBackend(name={self.name!r}, base_url={urls!r}, model={self.model!r})"
        )

    def replica_stats(self) -> list[ReplicaStats]:
        """Requests, failed attempts and cooldowns per replica so far, in pool-file order."""
        return self.replicas.stats()

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
        got = 0
        if request.n > 1 and any(_may_honour_n(r.target) for r in self.replicas.replicas):
            try:
                first, endpoint = await self._request(request, request.n, request.seed)
            except _NUnsupported:
                pass
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
        """Close the HTTP clients of the running event loop."""
        clients = self._clients.pop(asyncio.get_running_loop(), {})
        await asyncio.gather(*(client.aclose() for client in clients.values()))

    async def _singles(self, request: GenerationRequest, start: int) -> AsyncIterator[Batch]:
        """Samples ``start .. n-1`` as parallel single requests, each yielded as it finishes."""

        async def single(index: int) -> tuple[int, Completion]:
            seed = None if request.seed is None else request.seed + index
            completions, _ = await self._request(request, 1, seed)
            return index, completions[0]

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

    def _client(self, replica: Replica[_Endpoint]) -> HttpClient:
        """The HTTP client of ``replica`` in the running event loop (:mod:`.http`), with
        room for the replica's ``max_concurrency`` connections."""
        clients = self._clients.setdefault(asyncio.get_running_loop(), {})
        client = clients.get(replica.url)
        if client is None:
            client = HttpClient(
                replica.url,
                api_key=self._api_key,
                headers=self._headers,
                max_concurrency=replica.capacity,
            )
            clients[replica.url] = client
        return client

    async def _request(
        self, request: GenerationRequest, n: int, seed: int | None
    ) -> tuple[list[Completion], _Endpoint]:
        """One request for ``n`` choices, retried: at least one choice and the endpoint that
        answered, or ``BackendError`` (``_NUnsupported`` when ``n > 1`` is refused)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.top_p < 1:
            body["top_p"] = request.top_p
        if n > 1:
            body["n"] = n
        if seed is not None:
            body["seed"] = seed
        usable = _may_honour_n if n > 1 else None
        attempt = 1
        while True:
            try:
                return await self._attempt(body, usable)
            except _Retryable as failure:
                if attempt > self.max_retries:
                    raise BackendError(
                        f"model {self.name!r}: gave up after {attempt} attempts at "
                        f"{failure.url}: {failure}"
                    ) from None
                attempt += 1

    async def _attempt(
        self, body: dict[str, Any], usable: Callable[[_Endpoint], bool] | None
    ) -> tuple[list[Completion], _Endpoint]:
        """One HTTP round trip to the least busy usable replica (waiting while all cool down).

        A retryable failure cools the replica down; a refusal of ``n`` is learned.
        """
        routed = await self.replicas.acquire(usable)
        if routed is None:
            raise _NUnsupported("no replica honours n")
        replica, waited = routed
        if waited > 0:
            self.waits.append(("retry", waited))
        sent_at = self.replicas.now()
        outcome: Literal["ok", "error", "cancelled"] = "cancelled"
        try:
            completions = await self._send(replica, body)
            outcome = "ok"
        except _Retryable as failure:
            outcome = "error"
            failure.url = replica.url
            self.replicas.cool(replica, sent_at, failure.retry_after)
            raise
        except _NUnsupported:
            outcome = "error"
            replica.target.learn(False)
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self.replicas.release(replica, outcome)
        return completions, replica.target

    async def _send(self, replica: Replica[_Endpoint], body: dict[str, Any]) -> list[Completion]:
        """One HTTP round trip to ``replica`` under its endpoint's limits."""
        url, endpoint = replica.url, replica.target
        client = self._client(replica)
        async with endpoint.semaphore():
            paced = await endpoint.pace()
            if paced > 0:
                self.waits.append(("pace", paced))
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(
                    client.post_chat(json.dumps(body).encode()),
                    self.timeout_s,
                )
            except asyncio.TimeoutError:
                raise _Retryable(f"no response within {self.timeout_s:g}s") from None
            except TransportError as error:
                raise _Retryable(
                    f"connection error: {_one_line(str(error)) or type(error).__name__}"
                ) from None
            latency = time.monotonic() - started
        if response.status >= 400:
            raise self._status_failure(response, body, url)
        return _completions(response.content, latency)

    def _status_failure(self, response: Reply, body: dict[str, Any], url: str) -> Exception:
        """What an HTTP error status means for us: retry, fall back from ``n``, or fail."""
        status = response.status
        message = _server_message(response)
        if status in _RETRY_STATUSES or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return _Retryable(f"{status}: {message}", retry_after)
        if status == 400 and "n" in body and not self._always_n and _REJECTS_N.search(message):
            return _NUnsupported(message)
        return BackendError(f"model {self.name!r}: {status} from {url}: {message}")


class ReplicaConfig(Strict):
    """One replica of ``base_urls`` written as a mapping."""

    url: str = Field(description="Server URL, e.g. http://host:8000/v1.")
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Most requests in flight here; null for the model's."
    )


class OpenAIConfig(ModelBase):
    """A pool entry with ``backend: openai``: a model behind an OpenAI-compatible server."""

    backend: Literal["openai"] = Field(description="openai: an OpenAI-compatible server.")
    base_url: str | None = Field(
        default=None, description="Server URL, e.g. http://host:8000/v1 (or give base_urls)."
    )
    base_urls: list[str | ReplicaConfig] | None = Field(
        default=None,
        min_length=1,
        description="Replicas serving the same model, in place of base_url: each a URL or "
        "{url, max_concurrency}. Each request goes to the least busy replica; one that "
        "fails cools down while the others take its traffic.",
    )
    model: str = Field(description="The model name the server knows.")
    api_key_env: str | None = Field(
        default=None, description="NAME of the environment variable holding the API key."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="Extra HTTP headers (no secrets)."
    )
    max_concurrency: int = Field(
        default=16, ge=1, description="Most requests in flight (per replica)."
    )
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="Request rate limit per endpoint (replica); null for none."
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Seconds before an attempt ends.")
    max_retries: int = Field(default=4, ge=0, description="Retries after a failed attempt.")
    supports_n: bool | None = Field(
        default=None,
        description="Whether the server honours n; null to detect it (and cache what was learned).",
    )

    @model_validator(mode="after")
    def _one_address(self) -> OpenAIConfig:
        if self.base_urls is None and self.base_url is None:
            raise key_error("base_url", "required for backend 'openai' (or base_urls: replicas)")
        if self.base_urls is not None and self.base_url is not None:
            raise key_error(
                "base_urls", f"model {self.name!r}: give base_url or base_urls, not both"
            )
        seen: set[str] = set()
        for i, (url, _) in enumerate(self.replicas()):
            if url in seen:
                raise key_error(f"base_urls[{i}]", f"model {self.name!r}: {url} is listed twice")
            seen.add(url)
        return self

    def replicas(self) -> list[tuple[str, int]]:
        """Each server's URL (without a trailing ``/``) and concurrency limit."""
        entries = [self.base_url] if self.base_urls is None else self.base_urls
        return [
            (entry.rstrip("/"), self.max_concurrency)
            if isinstance(entry, str)
            else (entry.url.rstrip("/"), entry.max_concurrency or self.max_concurrency)
            for entry in entries
            if entry is not None
        ]

    def shared_by(self, workers: int) -> OpenAIConfig:
        """This entry with ``max_concurrency`` (each replica's too) and
        ``requests_per_minute`` divided among ``workers`` processes, so that together
        they keep to the pool file's limits (a concurrency of at least 1 each)."""
        if workers == 1:
            return self

        def share(limit: int) -> int:
            return max(limit // workers, 1)

        base_urls = self.base_urls
        if base_urls is not None:
            base_urls = [
                entry.model_copy(update={"max_concurrency": share(entry.max_concurrency)})
                if isinstance(entry, ReplicaConfig) and entry.max_concurrency is not None
                else entry
                for entry in base_urls
            ]
        rpm = self.requests_per_minute
        return self.model_copy(
            update={
                "max_concurrency": share(self.max_concurrency),
                "base_urls": base_urls,
                "requests_per_minute": None if rpm is None else rpm / workers,
            }
        )

    def identity(self) -> dict[str, Any]:
        """The served model's name (not its servers: replicas serve the same weights)."""
        return {"model": self.model}

    def build(self) -> OpenAICompatibleBackend:
        """The backend; reads the API key from ``api_key_env``, if set."""
        return OpenAICompatibleBackend(
            self.name,
            base_url=self.replicas(),
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
