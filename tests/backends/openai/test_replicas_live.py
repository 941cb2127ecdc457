"""One model on several loopback servers: spread, failover, recovery, and the pool file keys."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from slm_mux.backends import GenerationRequest, OpenAICompatibleBackend
from slm_mux.backends.config import Defaults
from slm_mux.backends.openai.config import OpenAIConfig
from slm_mux.backends.openai.http import connection_limit
from slm_mux.errors import InputError
from slm_mux.pool import pool_from_dict
from slm_mux.testing import FakeServer, FakeServerConfig, Fault, ManualClock, run_fake_server

MODEL = "m"
Servers = list[tuple[str, FakeServer]]


def ask(n: int) -> GenerationRequest:
    return GenerationRequest(
        [{"role": "user", "content": "2+2?"}], n=n, temperature=0.3, max_tokens=16, seed=1
    )


@pytest.fixture
def three_servers() -> Iterator[Servers]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(run_fake_server(FakeServerConfig(latency_s=0.05))) for _ in range(3)
        ]


def backend(urls: list[str], **options: object) -> OpenAICompatibleBackend:
    settings: dict[str, object] = {
        "model": MODEL,
        "timeout_s": 10.0,
        "max_retries": 6,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.2,
        "max_concurrency": 64,
    }
    settings.update(options)
    return OpenAICompatibleBackend("replicated", base_url=urls, **settings)  # type: ignore[arg-type]


async def test_a_burst_spreads_over_the_replicas(three_servers: Servers) -> None:
    made = backend([url for url, _ in three_servers])
    try:
        await asyncio.gather(*(made.generate(ask(1)) for _ in range(90)))
    finally:
        await made.aclose()
    counts = [server.request_count for _, server in three_servers]
    assert counts == [30, 30, 30]
    assert [s.requests for s in made.replica_stats()] == counts


async def test_k_samples_of_a_question_stay_in_one_request(three_servers: Servers) -> None:
    made = backend([url for url, _ in three_servers])
    try:
        await asyncio.gather(*(made.generate(ask(3)) for _ in range(6)))
    finally:
        await made.aclose()
    requests = [r for _, server in three_servers for r in server.requests]
    assert [r.body["n"] for r in requests] == [3] * 6
    assert [server.request_count for _, server in three_servers] == [2, 2, 2]


async def test_singles_of_a_server_that_ignores_n_spread() -> None:
    with ExitStack() as stack:
        servers = [
            stack.enter_context(run_fake_server(FakeServerConfig(honour_n=False))) for _ in range(2)
        ]
        made = backend([url for url, _ in servers], supports_n=False)
        try:
            completions = await made.generate(ask(4))
        finally:
            await made.aclose()
    assert len(completions) == 4
    assert [server.request_count for _, server in servers] == [2, 2]


async def test_n_support_is_learned_per_replica() -> None:
    with (
        run_fake_server() as (url_n, honours),
        run_fake_server(FakeServerConfig(honour_n=False)) as (url_1, ignores),
    ):
        made = backend([url_n, url_1], max_concurrency=1)
        try:
            for _ in range(4):  # one at a time: each goes to an idle replica
                assert len(await made.generate(ask(3))) == 3
        finally:
            await made.aclose()
    learned = [r.target.supports_n for r in made.replicas.replicas]
    assert learned == [True, False]
    # Once learned (two short replies), n-requests go only where n is honoured;
    # top-ups go anywhere.
    taught = [r.body.get("n") for r in ignores.requests].count(3)
    assert taught == 2
    assert [r.body.get("n") for r in honours.requests].count(3) == 4 - taught


async def test_a_failing_replica_cools_and_the_retry_goes_elsewhere(three_servers: Servers) -> None:
    (_, first), *_ = three_servers
    first.faults.push(Fault.error(503, "overloaded", retry_after=5.0))
    made = backend([url for url, _ in three_servers], max_concurrency=1, backoff_max_s=10.0)
    try:
        await asyncio.gather(*(made.generate(ask(1)) for _ in range(3)))
    finally:
        await made.aclose()
    stats = made.replica_stats()
    assert (stats[0].requests, stats[0].errors, stats[0].cooldowns) == (1, 1, 1)
    assert sorted((s.requests, s.errors) for s in stats[1:]) == [(1, 0), (2, 0)]
    assert first.request_count == 1
    assert sum(server.responses for _, server in three_servers) == 3
    assert list(made.waits) == []  # the retry waited for a free slot, not for a cooldown


async def test_when_every_replica_cools_requests_wait_for_the_first_to_recover(
    three_servers: Servers,
) -> None:
    for seconds, (_, server) in zip((0.3, 0.1, 0.2), three_servers, strict=True):
        server.faults.push(Fault.error(429, "slow down", retry_after=seconds))
    clock = ManualClock()
    made = backend(
        [url for url, _ in three_servers], max_concurrency=1, clock=clock, sleep=clock.sleep
    )
    try:
        await asyncio.gather(*(made.generate(ask(1)) for _ in range(3)))
    finally:
        await made.aclose()
    assert sum(server.responses for _, server in three_servers) == 3
    assert sum(server.request_count for _, server in three_servers) == 6
    assert [s.cooldowns for s in made.replica_stats()] == [1, 1, 1]
    # Every replica cooled at once: the retries waited for the first to recover (0.1 s),
    # for the cooldowns rather than backing off on their own.
    assert all(kind == "retry" for kind, _ in made.waits)
    assert min(clock.slept) == pytest.approx(0.1)


# --- the pool file ----------------------------------------------------------


def config(**keys: object) -> dict[str, object]:
    return {"name": "q", "backend": "openai", "model": MODEL, **keys}


def test_base_urls_take_urls_and_mappings_with_their_own_concurrency() -> None:
    pool = pool_from_dict(
        {
            "models": [
                config(
                    max_concurrency=8,
                    base_urls=[
                        "http://a:8000/v1/",
                        {"url": "http://b:8000/v1", "max_concurrency": 2},
                    ],
                )
            ]
        }
    )
    (entry,) = pool.models
    assert isinstance(entry, OpenAIConfig)
    assert entry.replicas() == [("http://a:8000/v1", 8), ("http://b:8000/v1", 2)]
    single = pool_from_dict({"models": [config(base_url="http://c:1/v1")]}).models[0]
    assert single.settings_hash(Defaults()) == entry.settings_hash(Defaults())


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "models[0].base_url: required for backend 'openai' (or base_urls: replicas)"),
        (
            {"base_url": "http://a/v1", "base_urls": ["http://b/v1"]},
            "models[0].base_urls: model 'q': give base_url or base_urls, not both",
        ),
        (
            {"base_urls": ["http://a/v1", {"url": "http://a/v1/"}]},
            "models[0].base_urls[1]: model 'q': http://a/v1 is listed twice",
        ),
        ({"base_urls": []}, "models[0].base_urls: List should have at least 1 item"),
        (
            {"base_urls": [{"url": "http://a/v1", "max_concurency": 2}]},
            "models[0].base_urls[0].ReplicaConfig.max_concurency: unknown key",
        ),
    ],
)
def test_bad_replica_lists_are_one_error_naming_the_key(
    keys: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError) as caught:
        pool_from_dict({"models": [config(**keys)]}, source="pool.yaml")
    assert str(caught.value).startswith(f"pool.yaml: {message}")


def test_a_replica_may_hold_more_connections_than_the_sdks_default() -> None:
    assert connection_limit(16) == 1000  # the SDK's default pool size suffices
    assert connection_limit(5000) == 5000
