"""The backend's HTTP client: requests dealt round-robin over several connection pools."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx2
import pytest

from slm_mux.backends.http import PooledTransport, http_client
from slm_mux.testing.fake_server import FakeServer

Send = Callable[[httpx2.Request], Awaitable[httpx2.Response]]


def _counting(send: Send, sent: Counter[int], number: int) -> Send:
    async def counted(request: httpx2.Request) -> httpx2.Response:
        sent[number] += 1
        return await send(request)

    return counted


def _count_requests(transport: PooledTransport) -> Counter[int]:
    """Counts, per pool, the requests each pool sends (each still goes out for real)."""
    sent: Counter[int] = Counter()
    for number, pool in enumerate(transport.pools):
        pool.handle_async_request = _counting(pool.handle_async_request, sent, number)  # type: ignore[method-assign,assignment]
    return sent


async def test_requests_are_dealt_evenly_over_the_pools(
    fake_server: tuple[str, FakeServer],
) -> None:
    base_url, server = fake_server
    client = http_client(base_url, api_key="k-123", headers={"X-Team": "mux"}, pools=3)
    transport = client._transport
    assert isinstance(transport, PooledTransport)
    sent = _count_requests(transport)
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    async with client:
        replies = await asyncio.gather(
            *(client.post("chat/completions", json=body) for _ in range(12))
        )
    assert [reply.status_code for reply in replies] == [200] * 12
    assert server.request_count == 12
    assert sent == {0: 4, 1: 4, 2: 4}
    headers = server.requests[0].headers
    assert headers["authorization"] == "Bearer k-123"
    assert headers["x-team"] == "mux"
    assert headers["user-agent"].startswith("slm-mux/")


async def test_closing_the_transport_closes_every_pool(
    fake_server: tuple[str, FakeServer],
) -> None:
    base_url, _ = fake_server
    transport = PooledTransport(pools=2)
    async with httpx2.AsyncClient(transport=transport) as client:
        for _ in range(2):
            reply = await client.get(f"{base_url}/models")
            assert reply.status_code == 200
        assert [len(pool._pool.connections) for pool in transport.pools] == [1, 1]
    assert [len(pool._pool.connections) for pool in transport.pools] == [0, 0]


def test_the_limits_are_split_across_the_pools() -> None:
    transport = PooledTransport(
        pools=8, limits=httpx2.Limits(max_connections=100, max_keepalive_connections=None)
    )
    assert len(transport.pools) == 8
    with pytest.raises(ValueError, match="pools"):
        PooledTransport(pools=0)


def test_a_proxy_in_the_environment_keeps_the_sdk_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    assert isinstance(http_client("http://a/v1", api_key="k")._transport, PooledTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert not isinstance(http_client("http://a/v1", api_key="k")._transport, PooledTransport)
