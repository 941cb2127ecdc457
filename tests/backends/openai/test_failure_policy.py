"""Failure policy against the fake server: a failed request retries alone, and secrets
never appear in an error."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import pytest

from slm_mux.backends import GenerationRequest, OpenAICompatibleBackend
from slm_mux.errors import BackendError, InputError
from slm_mux.testing import FakeServer, Fault, ManualClock, run_fake_server

MakeBackend = Callable[..., OpenAICompatibleBackend]
KEY = "sk-live-0123456789abcdef"


def ask(n: int = 1) -> GenerationRequest:
    return GenerationRequest(
        [{"role": "user", "content": "2+2?"}], n=n, temperature=0.3, max_tokens=16, seed=1
    )


async def test_a_random_500_is_retried_alone_and_the_only_server_stays_in_service(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    server.faults.push(Fault.error(500, "random failure"))
    clock = ManualClock()
    backend = make_backend(url, clock=clock, sleep=clock.sleep, retry_base_s=0.5)
    results = await asyncio.gather(*(backend.generate(ask()) for _ in range(8)))
    assert all(len(completions) == 1 for completions in results)
    assert server.request_count == 9
    (stats,) = backend.replica_stats()
    assert (stats.errors, stats.cooldowns) == (1, 0)
    # Only the failed request waited (its own backoff); nobody waited for a cooldown.
    assert [kind for kind, _ in backend.waits] == ["backoff"]
    assert 0.25 <= backend.waits[0][1] <= 0.5


async def test_a_500_with_retry_after_delays_only_that_request(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    server.faults.push(Fault.error(500, "try later", retry_after=0.7))
    clock = ManualClock()
    backend = make_backend(url, clock=clock, sleep=clock.sleep)
    await asyncio.gather(*(backend.generate(ask()) for _ in range(3)))
    assert list(backend.waits) == [("backoff", 0.7)]
    assert backend.replica_stats()[0].cooldowns == 0


async def test_a_refused_connection_cools_the_server(make_backend: MakeBackend) -> None:
    with run_fake_server() as (url, _):
        pass  # stopped: its port now refuses connections
    clock = ManualClock()
    backend = make_backend(url, clock=clock, sleep=clock.sleep, max_retries=2)
    with pytest.raises(BackendError, match="connection error"):
        await backend.generate(ask())
    assert backend.replica_stats()[0].cooldowns == 3
    assert {kind for kind, _ in backend.waits} == {"retry"}


async def test_a_server_failing_most_requests_is_cooled_by_the_error_rate(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    server.faults.push(*[Fault.error(500, "sick")] * 5)
    clock = ManualClock()
    backend = make_backend(url, clock=clock, sleep=clock.sleep, max_retries=5, supports_n=False)
    await backend.generate(ask())
    assert server.request_count == 6
    assert backend.replica_stats()[0].cooldowns == 1
    assert [kind for kind, _ in backend.waits] == ["backoff"] * 4 + ["retry"]


# --- secrets ----------------------------------------------------------------


async def test_an_echoed_api_key_never_reaches_the_error(
    fake_server: tuple[str, FakeServer],
    make_backend: MakeBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, server = fake_server
    monkeypatch.setenv("SLM_MUX_TEST_KEY", KEY)
    server.faults.push(Fault.echo_authorization(401))
    backend = make_backend(url, api_key_env="SLM_MUX_TEST_KEY")
    with pytest.raises(BackendError) as caught:
        await backend.generate(ask())
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was echoed
    assert str(caught.value) == f"model 'qwen': 401 from {url}: bad key Bearer ***"


async def test_an_echoed_key_in_retried_failures_never_reaches_the_error(
    fake_server: tuple[str, FakeServer],
    make_backend: MakeBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, server = fake_server
    monkeypatch.setenv("SLM_MUX_TEST_KEY", KEY)
    server.faults.push(*[Fault.echo_authorization(502)] * 2)
    backend = make_backend(url, api_key_env="SLM_MUX_TEST_KEY", max_retries=1)
    with pytest.raises(BackendError) as caught:
        await backend.generate(ask())
    assert KEY not in str(caught.value)
    assert str(caught.value).endswith("502: bad key Bearer ***")


async def test_no_part_of_a_long_echoed_key_survives_cutting_the_message_short(
    fake_server: tuple[str, FakeServer],
    make_backend: MakeBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, server = fake_server
    long_key = "sk-" + "0123456789" * 40  # longer than a one-line message may be
    monkeypatch.setenv("SLM_MUX_TEST_KEY", long_key)
    server.faults.push(Fault.echo_authorization(401))
    backend = make_backend(url, api_key_env="SLM_MUX_TEST_KEY")
    with pytest.raises(BackendError) as caught:
        await backend.generate(ask())
    assert long_key[:12] not in str(caught.value)
    assert str(caught.value).endswith("bad key Bearer ***")


async def test_url_credentials_are_sent_as_basic_auth_and_never_shown(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    signed = url.replace("http://", "http://alice:pa%40ss-42@")
    backend = make_backend(signed)
    assert len(await backend.generate(ask())) == 1
    token = base64.b64encode(b"alice:pa@ss-42").decode()
    assert server.requests[0].headers["authorization"] == f"Basic {token}"
    assert backend.base_urls == [url]
    assert "alice" not in repr(backend) and "pa%40ss" not in repr(backend)
    server.faults.push(Fault.echo_authorization(403))
    with pytest.raises(BackendError) as caught:
        await backend.generate(ask())
    message = str(caught.value)
    assert message == f"model 'qwen': 403 from {url}: bad key Basic ***"
    for secret in ("pa@ss-42", "pa%40ss-42", token):
        assert secret not in message


def test_url_credentials_and_an_api_key_are_refused_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLM_MUX_TEST_KEY", KEY)
    with pytest.raises(InputError, match="give api_key_env or credentials in the URL, not both"):
        OpenAICompatibleBackend(
            "m", base_url="http://u:p@127.0.0.1:9/v1", model="m", api_key_env="SLM_MUX_TEST_KEY"
        )
