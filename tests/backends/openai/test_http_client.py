"""The backend's HTTP client, against the real fake server on loopback."""

from __future__ import annotations

import asyncio
import json

import pytest

from slm_mux.backends.openai.http import HttpClient, TransportError, connection_limit
from slm_mux.testing.fake_server import FakeServer, Fault, run_fake_server

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "q"}]}).encode()


async def test_posts_json_with_the_key_and_headers_and_reuses_connections(
    fake_server: tuple[str, FakeServer],
) -> None:
    base_url, server = fake_server
    client = HttpClient(base_url + "/", api_key="k-123", headers={"X-Team": "mux"})
    try:
        replies = await asyncio.gather(*(client.post_chat(BODY) for _ in range(12)))
        again = await client.post_chat(BODY)
    finally:
        await client.aclose()
    assert [reply.status for reply in [*replies, again]] == [200] * 13
    assert json.loads(again.content)["choices"][0]["message"]["content"]
    assert server.request_count == 13
    headers = server.requests[0].headers
    assert headers["authorization"] == "Bearer k-123"
    assert headers["x-team"] == "mux"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("slm-mux/")
    assert server.requests[0].body["model"] == "m"


async def test_an_error_status_is_a_reply_with_its_headers() -> None:
    with run_fake_server() as (url, server):
        server.faults.push(Fault.error(429, "slow down", retry_after=2.5))
        client = HttpClient(url, api_key="k")
        try:
            reply = await client.post_chat(BODY)
        finally:
            await client.aclose()
    assert reply.status == 429
    assert reply.headers["retry-after"] == "2.5"
    assert "slow down" in reply.text


async def test_a_dropped_connection_is_a_transport_error() -> None:
    with run_fake_server() as (url, server):
        server.faults.push(Fault.drop_connection())
        client = HttpClient(url, api_key="k")
        try:
            with pytest.raises(TransportError):
                await client.post_chat(BODY)
        finally:
            await client.aclose()


async def test_a_refused_connection_is_a_transport_error() -> None:
    client = HttpClient("http://127.0.0.1:9/v1", api_key="k")
    try:
        with pytest.raises(TransportError, match=r"cannot connect to 127\.0\.0\.1:9"):
            await client.post_chat(BODY)
    finally:
        await client.aclose()


def test_a_client_holds_at_least_the_sdks_connections() -> None:
    assert connection_limit(16) == 1000
    assert connection_limit(5000) == 5000


async def test_a_proxy_in_the_environment_is_looked_up_once_per_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "local.invalid")
    proxied = HttpClient("http://gpu1.invalid:8000/v1", api_key="k")
    bypassed = HttpClient("http://local.invalid:8000/v1", api_key="k")
    try:
        assert str(proxied.proxy) == "http://proxy.invalid:3128"
        assert bypassed.proxy is None
    finally:
        await proxied.aclose()
        await bypassed.aclose()
