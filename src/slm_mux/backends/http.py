"""The HTTP client of the OpenAI-compatible backend: ``httpx2`` over a few small pools.

The backend posts chat-completion bodies with ``httpx2`` (the client library under
the ``openai`` SDK) and reads the JSON itself: it needs none of the SDK's request
and response models, and skipping them took about 30 % off ``slm-mux serve``'s
CPU per request (``bench/bench_serve.py``).

An ``httpx2`` connection pool probes every idle connection's socket each time a
request joins or leaves it, so its cost per request grows with the connections it
holds: with a hundred requests in flight on one endpoint, that probing was about a
fifth of the server's CPU (py-spy). :class:`PooledTransport` deals requests
round-robin to several independent pools, so each holds a fraction of the
connections: about 30 % less CPU per request again.

Where the environment names a proxy (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``),
the client uses ``httpx2``'s own transport instead, which honours it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import urllib.request
from collections.abc import Mapping

import httpx2

from slm_mux import __version__

POOLS = 8
"""Connection pools per client."""

MAX_CONNECTIONS = 1000
"""Connections one client may hold at least (the ``openai`` SDK's default)."""

MAX_KEEPALIVE = 100
"""Idle connections one client keeps open for reuse (the SDK's default)."""

KEEPALIVE_S = 5.0
"""Seconds an idle connection stays open (the SDK's default)."""


def _share(total: int | None, parts: int) -> int | None:
    return None if total is None else max(math.ceil(total / parts), 1)


def connection_limits(max_concurrency: int) -> httpx2.Limits:
    """Limits that hold ``max_concurrency`` connections, and at least the SDK's 1,000."""
    return httpx2.Limits(
        max_connections=max(max_concurrency, MAX_CONNECTIONS),
        max_keepalive_connections=MAX_KEEPALIVE,
        keepalive_expiry=KEEPALIVE_S,
    )


class PooledTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport that deals requests round-robin to ``pools`` connection pools,
    which share ``limits`` evenly."""

    def __init__(self, pools: int = POOLS, limits: httpx2.Limits | None = None) -> None:
        if pools < 1:
            raise ValueError("pools must be at least 1")
        limits = limits or connection_limits(0)
        each = httpx2.Limits(
            max_connections=_share(limits.max_connections, pools),
            max_keepalive_connections=_share(limits.max_keepalive_connections, pools),
            keepalive_expiry=limits.keepalive_expiry,
        )
        ssl_context = httpx2.create_ssl_context()  # one for all pools: each costs milliseconds
        self.pools = [
            httpx2.AsyncHTTPTransport(verify=ssl_context, limits=each) for _ in range(pools)
        ]
        self._turn = itertools.cycle(self.pools)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` on the next pool in turn."""
        return await next(self._turn).handle_async_request(request)

    async def aclose(self) -> None:
        """Close every pool's connections."""
        await asyncio.gather(*(pool.aclose() for pool in self.pools))


def behind_proxy() -> bool:
    """Whether the environment names an HTTP(S) proxy."""
    return any(scheme in urllib.request.getproxies() for scheme in ("http", "https", "all"))


def http_client(
    base_url: str,
    *,
    api_key: str,
    headers: Mapping[str, str] | None = None,
    max_concurrency: int = 0,
    pools: int = POOLS,
) -> httpx2.AsyncClient:
    """A client for one server: JSON headers, bearer ``api_key``, extra ``headers``, and
    room for ``max_concurrency`` connections. Timeouts are the caller's."""
    limits = connection_limits(max_concurrency)
    sent = {
        "Accept": "application/json",
        "Authorization": f"Bearer {api_key}",
        "User-Agent": f"slm-mux/{__version__}",
        **(headers or {}),
    }
    if behind_proxy():
        return httpx2.AsyncClient(base_url=base_url, headers=sent, timeout=None, limits=limits)
    return httpx2.AsyncClient(
        base_url=base_url,
        headers=sent,
        timeout=None,
        transport=PooledTransport(pools, limits),
    )
