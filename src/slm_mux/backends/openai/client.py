"""The retrying client: one backend for every OpenAI-compatible chat server.

vLLM, SGLang, llama.cpp, Ollama, LM Studio, Together, OpenRouter and OpenAI
differ only in configuration: base URL, model name, the *name* of the
environment variable holding the API key, and extra headers.

Policy, all ours (requests go out through :mod:`.http`, on aiohttp; bodies and
replies are read in :mod:`.wire`):

* ``n`` samples go in one request. When a server answers with fewer choices,
  or with a 400 that mentions ``n``, the missing samples go as parallel single
  requests; a server that does so consistently (:mod:`.endpoints`) is remembered
  per endpoint (base URL + model) as not supporting ``n``, and every later
  request goes as single requests. Single request ``i`` uses seed ``seed + i``,
  so sample 0 keeps the request's seed. What was learned is also written to the
  capability cache (:mod:`.endpoints`; entries expire after a day), so the next
  process starts with it.
* Completions are handed back as they finish (:meth:`OpenAICompatibleBackend.stream`):
  the ``n``-request's choices together, then each single request on its own.
* Backends on the same endpoint share one concurrency limit and one
  requests-per-minute pacing (:class:`~.endpoints.Endpoint`).
* A model may be served by several replicas (``base_urls``); each request goes
  to the least busy one that is not cooling down (:mod:`.replicas`),
  through one HTTP client per replica. Each replica is its own endpoint: its own
  concurrency limit, pacing and learned ``n`` support (replicas may run
  different servers); an ``n``-request goes only to replicas not known to
  refuse ``n``.
* 408, 409, 429, 5xx, connection errors, timeouts, malformed JSON and empty
  ``choices`` are retried, up to ``max_retries`` times per request. A failed
  request is retried on its own: it backs off (seeded jitter, or the
  ``Retry-After`` it got) while its replica stays in service for every other
  request. A replica cools down only on evidence that it is down or overloaded
  (a refused or reset connection, a 429, a 503 with ``Retry-After``, or an error
  rate: the rule is in :mod:`.replicas`); then the retry goes to another replica,
  or waits for the first to recover. Other 4xx fail at once. Every attempt is
  bounded by ``timeout_s``.
* A model whose every replica is cooling down costs a request at most its wait
  budget: ``wait_budget_s`` seconds of waiting for a recovery over all the request's
  attempts, and nothing once the model is known down (the rule is in :mod:`.replicas`):
  the request fails at once (``skipped``), sending nothing. A *patient* request
  (:attr:`~slm_mux.backends.base.GenerationRequest.patient`: ``collect``'s) may wait
  one full cooldown (``backoff_max_s``) instead.
* Secrets never leave in an error: every :class:`~slm_mux.errors.BackendError`
  this backend raises has the API key and any URL credentials (sent as HTTP
  Basic auth) replaced by ``***``, and names servers without credentials.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Literal

from slm_mux.backends.base import (
    Batch,
    Completion,
    GenerationRequest,
    Price,
    ReplicaStats,
    Usage,
    gather_stream,
)
from slm_mux.backends.openai.endpoints import Endpoint, endpoint
from slm_mux.backends.openai.http import HttpClient, Reply, TransportError, url_secrets
from slm_mux.backends.openai.replicas import (
    WAIT_BUDGET_S,
    CoolingDown,
    Evidence,
    Replica,
    ReplicaSet,
    shown_url,
)
from slm_mux.backends.openai.wire import (
    NOTHING_PINNED,
    REJECTS_N,
    MalformedReply,
    ServerSampling,
    one_line,
    parse_completions,
    parse_retry_after,
    request_body,
    server_message,
)
from slm_mux.errors import BackendError, InputError, redact

_RETRY_STATUSES = frozenset({408, 409, 429})


class _Retryable(Exception):
    """An attempt failed in a way that another attempt may fix."""

    def __init__(
        self, reason: str, evidence: Evidence = "error", retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.evidence: Evidence = evidence
        self.retry_after = retry_after
        self.url = ""
        """The replica that failed (set where the attempt was routed)."""
        self.cooling = False
        """Whether that replica cools down now (else the request backs off on its own)."""
        self.waited = 0.0
        """Seconds the attempt waited for a cooling replica before it was sent."""


class _NUnsupported(Exception):
    """The server rejected ``n > 1``."""


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
    A URL may carry ``user:password@`` credentials, sent as HTTP Basic auth (then
    without ``api_key_env``); the backend shows and keys the URL without them.
    A replica's cooldowns back off from ``backoff_base_s``, a failed request's own
    retries from ``retry_base_s`` (:class:`~.replicas.ReplicaSet`), both up to
    ``backoff_max_s``. A request waits for cooling replicas at most ``wait_budget_s``
    seconds in all (a patient one up to ``backoff_max_s``; ``None``: no limit), else
    fails at once, counted in ``skipped``. ``sampling`` holds the sampling settings the
    pool entry pins on the server (:class:`~.wire.ServerSampling`). ``clock`` and
    ``sleep`` time latencies, cooldowns and pacing (replaceable for tests; see
    :class:`slm_mux.testing.ManualClock`).
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
        sampling: ServerSampling = NOTHING_PINNED,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_base_s: float = 0.1,
        wait_budget_s: float | None = WAIT_BUDGET_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        entries = [base_url] if isinstance(base_url, str) else list(base_url)
        urls = [(entry if isinstance(entry, str) else entry[0]).rstrip("/") for entry in entries]
        secrets = [secret for url in urls for secret in url_secrets(url)]
        api_key = "unused"
        if api_key_env is not None:
            value = os.environ.get(api_key_env)
            if not value:
                raise InputError(f"model {name!r}: environment variable {api_key_env} is not set")
            if secrets:
                raise InputError(
                    f"model {name!r}: give api_key_env or credentials in the URL, not both"
                )
            api_key = value
            secrets.append(value)
        self._secrets = tuple(secrets)
        self.name = name
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.wait_budget_s = wait_budget_s
        self.skipped = 0
        """Requests failed at once because every replica cooled longer than they could wait."""
        self.price = price
        self.sampling = sampling
        self.usage = Usage()
        self.waits: deque[tuple[str, float]] = deque(maxlen=256)
        """The latest waits before an attempt, newest last: ``("retry", s)`` while every
        replica cooled down, ``("backoff", s)`` when a failed request waited on its own
        before its retry, or ``("pace", s)`` under the requests-per-minute limit."""
        self._always_n = supports_n is True
        self._signed_urls: dict[str, str] = {}
        """Each replica's URL as given (credentials included), by its shown URL."""
        replicas = []
        for entry, signed in zip(entries, urls, strict=True):
            limit = max_concurrency if isinstance(entry, str) else entry[1]
            url = shown_url(signed)
            self._signed_urls[url] = signed
            state = endpoint(name, url, model, limit, requests_per_minute, supports_n)
            replicas.append(Replica(url, limit, state))
        self.base_urls = [replica.url for replica in replicas]
        self.replicas = ReplicaSet(
            replicas,
            seed=name,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            retry_base_s=retry_base_s,
            clock=clock,
            sleep=sleep,
        )
        self._clock = clock
        self._sleep = sleep
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
        if request.n > 1 and any(r.target.may_honour_n() for r in self.replicas.replicas):
            try:
                first, answered = await self._request(request, request.n, request.seed)
            except _NUnsupported:
                pass
            else:
                first = first[: request.n]
                got = len(first)
                await answered.observe(got == request.n)  # a pool's supports_n pins it
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

    def _client(self, replica: Replica[Endpoint]) -> HttpClient:
        """The HTTP client of ``replica`` in the running event loop (:mod:`.http`), with
        room for the replica's ``max_concurrency`` connections."""
        clients = self._clients.setdefault(asyncio.get_running_loop(), {})
        client = clients.get(replica.url)
        if client is None:
            client = HttpClient(
                self._signed_urls[replica.url],
                api_key=self._api_key,
                headers=self._headers,
                max_concurrency=replica.capacity,
            )
            clients[replica.url] = client
        return client

    async def _request(
        self, request: GenerationRequest, n: int, seed: int | None
    ) -> tuple[list[Completion], Endpoint]:
        """One request for ``n`` choices, retried: at least one choice and the endpoint that
        answered, or ``BackendError`` (``_NUnsupported`` when ``n > 1`` is refused)."""
        body = request_body(self.model, request, n, seed, self.sampling)
        usable = Endpoint.may_honour_n if n > 1 else None
        budget = self._wait_budget(request)
        spent = 0.0  # waiting for recoveries, in earlier attempts
        attempt = 1
        while True:
            try:
                return await self._attempt(body, usable, budget, spent)
            except CoolingDown as cooling:
                self.skipped += 1
                cause = f" after: {cooling.cause}" if cooling.cause else ""
                raise self._error(
                    f"skipped: every server is cooling down for {cooling.wait_s:.1f}s more, "
                    f"longer than this request may wait ({budget}s in all){cause}"
                ) from None
            except _Retryable as failure:
                spent += failure.waited
                if attempt > self.max_retries:
                    raise self._error(
                        f"gave up after {attempt} attempts at {failure.url}: {failure}"
                    ) from None
                if not failure.cooling:  # its replica serves on: this request backs off alone
                    delay = self.replicas.retry_delay(attempt, failure.retry_after)
                    self.waits.append(("backoff", delay))
                    await self._sleep(delay)
                attempt += 1

    def _wait_budget(self, request: GenerationRequest) -> float | None:
        """Seconds ``request`` may wait for cooling replicas over all its attempts."""
        if self.wait_budget_s is None or not request.patient:
            return self.wait_budget_s
        return max(self.wait_budget_s, self.replicas.backoff_max_s)

    def _error(self, message: str) -> BackendError:
        """A :class:`BackendError` about this model, with every secret of it redacted."""
        return BackendError(redact(f"model {self.name!r}: {message}", self._secrets))

    async def _attempt(
        self,
        body: dict[str, object],
        usable: Callable[[Endpoint], bool] | None,
        budget: float | None,
        spent: float,
    ) -> tuple[list[Completion], Endpoint]:
        """One HTTP round trip to the least busy usable replica (waiting while all cool
        down, within ``budget`` of which ``spent`` is gone: else :class:`~.replicas.CoolingDown`).

        A retryable failure is reported to the replica set (which may cool the replica
        down); a refusal of ``n`` is learned.
        """
        routed = await self.replicas.acquire(usable, budget, spent)
        if routed is None:
            raise _NUnsupported("no replica honours n")
        replica, waited = routed
        number = replica.requests  # this request's number at the replica
        if waited > 0:
            self.waits.append(("retry", waited))
        outcome: Literal["ok", "error", "cancelled"] = "cancelled"
        try:
            completions = await self._send(replica, body)
            outcome = "ok"
        except _Retryable as failure:
            outcome = "error"
            failure.url = replica.url
            failure.waited = waited
            failure.cooling = self.replicas.failed(
                replica, number, failure.evidence, failure.retry_after, str(failure)
            )
            raise
        except _NUnsupported:
            outcome = "error"
            await replica.target.observe(False)
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self.replicas.release(replica, outcome)
        return completions, replica.target

    async def _send(self, replica: Replica[Endpoint], body: dict[str, object]) -> list[Completion]:
        """One HTTP round trip to ``replica`` under its endpoint's limits."""
        url, target = replica.url, replica.target
        client = self._client(replica)
        async with target.semaphore():
            paced = await target.pace(self._clock, self._sleep)
            if paced > 0:
                self.waits.append(("pace", paced))
            started = self._clock()
            try:
                response = await asyncio.wait_for(
                    client.post_chat(json.dumps(body).encode()),
                    self.timeout_s,
                )
            except asyncio.TimeoutError:
                raise _Retryable(f"no response within {self.timeout_s:g}s") from None
            except TransportError as error:
                raise _Retryable(
                    "connection error: "
                    f"{one_line(redact(str(error), self._secrets)) or type(error).__name__}",
                    "down" if error.down else "error",
                ) from None
            latency = self._clock() - started
        if response.status >= 400:
            raise self._status_failure(response, body, url)
        try:
            return parse_completions(response.content, latency)
        except MalformedReply as malformed:
            raise _Retryable(str(malformed)) from None

    def _status_failure(self, response: Reply, body: dict[str, object], url: str) -> Exception:
        """What an HTTP error status means for us: retry, fall back from ``n``, or fail."""
        status = response.status
        message = server_message(response.content, response.reason, self._secrets)
        if status in _RETRY_STATUSES or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            overloaded = status == 429 or (status == 503 and retry_after is not None)
            return _Retryable(
                f"{status}: {message}", "overloaded" if overloaded else "error", retry_after
            )
        if status == 400 and "n" in body and not self._always_n and REJECTS_N.search(message):
            return _NUnsupported(message)
        return self._error(f"{status} from {url}: {message}")
