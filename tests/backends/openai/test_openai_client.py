"""The OpenAI-compatible backend against the fake server on loopback, through the real SDK."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable

import pytest

from slm_mux.backends import GenerationRequest, OpenAICompatibleBackend, Price
from slm_mux.backends.openai.replicas import backoff_delay
from slm_mux.backends.openai.wire import REJECTS_N, parse_retry_after
from slm_mux.errors import BackendError, InputError
from slm_mux.testing import (
    FakeServer,
    FakeServerConfig,
    Fault,
    ManualClock,
    echo_answer,
    run_fake_server,
)

MakeBackend = Callable[..., OpenAICompatibleBackend]

MODEL = "qwen2.5-1.5b"
QUESTION = "What is 2 + 2?"
MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": QUESTION},
]


def ask(n: int, seed: int | None = 11) -> GenerationRequest:
    return GenerationRequest(MESSAGES, n=n, temperature=0.3, max_tokens=64, seed=seed)


def expected(seed: int | None, index: int) -> str:
    return echo_answer(MODEL, QUESTION, seed, index)


async def test_one_request_carries_model_messages_n_temperature_max_tokens_seed(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    backend = make_backend(url, headers={"X-Team": "mux"})
    completions = await backend.generate(ask(3))
    assert server.request_count == 1
    sent = server.requests[0]
    assert sent.body == {
        "model": MODEL,
        "messages": MESSAGES,
        "n": 3,
        "temperature": 0.3,
        "max_tokens": 64,
        "seed": 11,
    }
    assert sent.headers["x-team"] == "mux"
    assert [c.text for c in completions] == [expected(11, i) for i in range(3)]
    assert {c.finish_reason for c in completions} == {"stop"}
    assert all(c.latency_s > 0 for c in completions)


async def test_top_p_below_one_is_sent(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    request = GenerationRequest(MESSAGES, n=1, temperature=0.3, max_tokens=64, top_p=0.9)
    await make_backend(url).generate(request)
    assert server.requests[0].body["top_p"] == 0.9


async def test_token_counts_add_up_to_the_servers_usage_and_give_a_cost(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, _ = fake_server
    backend = make_backend(url, price=Price(input_per_million=1.0, output_per_million=2.0))
    completions = await backend.generate(ask(3))
    prompt_words = sum(len(m["content"].split()) for m in MESSAGES)  # the server counts words
    answer_words = sum(len(expected(11, i).split()) for i in range(3))
    assert sum(c.prompt_tokens or 0 for c in completions) == prompt_words
    assert sum(c.completion_tokens or 0 for c in completions) == answer_words
    assert (backend.usage.prompt_tokens, backend.usage.completion_tokens) == (
        prompt_words,
        answer_words,
    )
    assert backend.cost_usd == pytest.approx((prompt_words + 2 * answer_words) / 1e6)


async def test_ignored_n_falls_back_to_single_requests_and_is_remembered(
    make_backend: MakeBackend,
) -> None:
    with run_fake_server(FakeServerConfig(honour_n=False)) as (url, server):
        backend = make_backend(url)
        first = await backend.generate(ask(3, seed=5))
        # One n=3 request yields one choice; samples 1 and 2 follow singly.
        assert [r.body.get("n") for r in server.requests] == [3, None, None]
        assert sorted(r.body["seed"] for r in server.requests[1:]) == [6, 7]
        assert [c.text for c in first] == [expected(5, 0), expected(6, 0), expected(7, 0)]

        # One short reply is not proof: n is tried once more; two in a row are.
        second = await backend.generate(ask(3, seed=5))
        assert [r.body.get("n") for r in server.requests[3:]] == [3, None, None]
        assert [c.text for c in second] == [c.text for c in first]
        third = await backend.generate(ask(3, seed=5))
        assert server.request_count == 9
        assert all("n" not in r.body for r in server.requests[6:])
        assert [c.text for c in third] == [c.text for c in first]

        # The memory belongs to the endpoint, not to one backend.
        await make_backend(url, name="qwen-hot").generate(ask(2))
        assert server.request_count == 11
        assert all("n" not in r.body for r in server.requests[9:])


async def test_a_400_about_n_falls_back_to_single_requests(make_backend: MakeBackend) -> None:
    with run_fake_server(FakeServerConfig(reject_n=True)) as (url, server):
        backend = make_backend(url)
        completions = await backend.generate(ask(3))
        assert server.request_count == 4  # the rejected n=3 request, then 3 singles
        assert sorted(c.text for c in completions) == sorted(expected(11 + i, 0) for i in range(3))
        await backend.generate(ask(3))
        assert server.request_count == 8  # rejected again: now n is known to be refused
        await backend.generate(ask(3))
        assert server.request_count == 11


@pytest.mark.parametrize(("supports_n", "sent_n"), [(False, [None, None, None]), (True, [3])])
async def test_configured_n_support_skips_detection(
    fake_server: tuple[str, FakeServer],
    make_backend: MakeBackend,
    supports_n: bool,
    sent_n: list[int | None],
) -> None:
    url, server = fake_server
    completions = await make_backend(url, supports_n=supports_n).generate(ask(3))
    assert len(completions) == 3
    assert [r.body.get("n") for r in server.requests] == sent_n


async def test_unseeded_single_requests_carry_no_seed(make_backend: MakeBackend) -> None:
    with run_fake_server() as (url, server):
        await make_backend(url, supports_n=False).generate(ask(2, seed=None))
        assert [("seed" in r.body) for r in server.requests] == [False, False]


async def test_429_waits_for_retry_after(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    server.faults.push(Fault.error(429, "slow down", retry_after=0.4))
    clock = ManualClock()
    backend = make_backend(url, clock=clock, sleep=clock.sleep)
    completions = await backend.generate(ask(1))
    assert list(backend.waits) == [("retry", 0.4)]  # the replica's whole cooldown
    assert clock.slept == [0.4]
    assert server.request_count == 2
    assert completions[0].text == expected(11, 0)


async def test_500_is_retried_until_success(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    server.faults.push(Fault.error(500), Fault.error(503))
    completions = await make_backend(url).generate(ask(2))
    assert server.request_count == 3
    assert [c.text for c in completions] == [expected(11, i) for i in range(2)]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_fail_fast_with_the_servers_message(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend, status: int
) -> None:
    url, server = fake_server
    server.faults.push(Fault.error(status, "the server says no"))
    with pytest.raises(BackendError) as caught:
        await make_backend(url).generate(ask(1))
    assert str(caught.value) == f"model 'qwen': {status} from {url}: the server says no"
    assert server.request_count == 1


async def test_unknown_model_is_a_404_naming_it(make_backend: MakeBackend) -> None:
    with run_fake_server(FakeServerConfig(answers={MODEL: echo_answer})) as (url, server):
        with pytest.raises(
            BackendError, match=r"^model 'llama': 404 from .*: model 'nope' not found$"
        ):
            await make_backend(url, name="llama", model="nope").generate(ask(3))
        assert server.request_count == 1


async def test_api_key_comes_from_the_named_environment_variable(
    make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLM_MUX_TEST_KEY", "sekrit-123")
    with run_fake_server(FakeServerConfig(api_key="sekrit-123")) as (url, server):
        keyed = make_backend(url, api_key_env="SLM_MUX_TEST_KEY")
        assert len(await keyed.generate(ask(1))) == 1
        assert server.requests[0].headers["authorization"] == "Bearer sekrit-123"
        assert "sekrit" not in repr(keyed)
        with pytest.raises(BackendError, match=r"401 from .*: invalid api key$"):
            await make_backend(url, name="keyless").generate(ask(1))
        assert server.request_count == 2


def test_a_missing_api_key_variable_names_it_and_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SLM_MUX_TEST_KEY", raising=False)
    with pytest.raises(InputError) as caught:
        OpenAICompatibleBackend(
            "gpt", base_url="http://127.0.0.1:9/v1", model="m", api_key_env="SLM_MUX_TEST_KEY"
        )
    assert str(caught.value) == "model 'gpt': environment variable SLM_MUX_TEST_KEY is not set"


async def test_a_slow_response_times_out_and_is_retried(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    server.faults.push(Fault.slow(5.0))
    completions = await make_backend(url, timeout_s=0.3).generate(ask(1))
    # Without the timeout the slow request would have answered, after 5 s, on its own.
    assert server.request_count == 2
    assert completions[0].text == expected(11, 0)


async def test_timeouts_give_up_after_the_last_attempt(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    server.faults.push(*[Fault.slow(5.0)] * 2)
    with pytest.raises(BackendError) as caught:
        await make_backend(url, timeout_s=0.3, max_retries=1).generate(ask(1))
    assert server.request_count == 2
    assert str(caught.value) == (
        f"model 'qwen': gave up after 2 attempts at {url}: no response within 0.3s"
    )


BROKEN_RESPONSES = [
    (Fault.malformed_json(), "malformed JSON in response"),
    (Fault.empty_choices(), "response has empty 'choices'"),
    (Fault.reply(b'{"choices": [3]}'), "malformed response: a choice has no 'message'"),
    (Fault.drop_connection(), "connection error: the reply was cut short"),
    (Fault.error(502, "bad gateway"), "502: bad gateway"),
]


@pytest.mark.parametrize(("fault", "reason"), BROKEN_RESPONSES)
async def test_a_broken_response_is_retried(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend, fault: Fault, reason: str
) -> None:
    url, server = fake_server
    server.faults.push(fault)
    completions = await make_backend(url).generate(ask(3))
    assert server.request_count == 2
    assert [c.text for c in completions] == [expected(11, i) for i in range(3)]


@pytest.mark.parametrize(("fault", "reason"), BROKEN_RESPONSES)
async def test_broken_responses_end_in_a_clear_error(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend, fault: Fault, reason: str
) -> None:
    url, server = fake_server
    server.faults.push(*[fault] * 3)
    with pytest.raises(BackendError) as caught:
        await make_backend(url, max_retries=2).generate(ask(3))
    assert str(caught.value).startswith(
        f"model 'qwen': gave up after 3 attempts at {url}: {reason}"
    )
    assert server.request_count == 3


async def test_backends_on_one_endpoint_share_its_concurrency_limit(
    make_backend: MakeBackend,
) -> None:
    with run_fake_server(FakeServerConfig(latency_s=0.15)) as (url, server):
        cold = make_backend(url, name="cold", max_concurrency=2)
        hot = make_backend(url, name="hot", max_concurrency=2)
        await asyncio.gather(*(b.generate(ask(1)) for b in [cold, hot] * 3))
        assert server.request_count == 6
        assert server.max_in_flight == 2


async def test_without_a_tight_limit_requests_overlap(make_backend: MakeBackend) -> None:
    with run_fake_server(FakeServerConfig(latency_s=0.3)) as (url, server):
        backend = make_backend(url, max_concurrency=8)
        await asyncio.gather(*(backend.generate(ask(1)) for _ in range(6)))
        assert server.max_in_flight == 6


async def test_requests_per_minute_spaces_requests(
    fake_server: tuple[str, FakeServer], make_backend: MakeBackend
) -> None:
    url, server = fake_server
    clock = ManualClock()
    backend = make_backend(url, requests_per_minute=600, clock=clock, sleep=clock.sleep)
    await asyncio.gather(*(backend.generate(ask(1)) for _ in range(4)))
    # The first goes at once; the others wait for slots 0.1 s apart.
    waits = list(backend.waits)
    assert [kind for kind, _ in waits] == ["pace"] * 3
    assert [seconds for _, seconds in waits] == pytest.approx([0.1, 0.2, 0.3])
    assert clock.slept == pytest.approx([0.1, 0.2, 0.3])
    assert server.request_count == 4


def test_conflicting_limits_on_one_endpoint_are_an_error() -> None:
    url = "http://127.0.0.1:9/v1"
    first = OpenAICompatibleBackend("a", base_url=url, model="m", max_concurrency=4)
    with pytest.raises(InputError, match=r"^model 'b': max_concurrency=8, .* differ from"):
        OpenAICompatibleBackend("b", base_url=url, model="m", max_concurrency=8)
    # Equal limits share the endpoint (and so its one concurrency limit).
    same = OpenAICompatibleBackend("c", base_url=url, model="m", max_concurrency=4)
    assert same.replicas.replicas[0].target is first.replicas.replicas[0].target


def test_a_backend_serves_one_event_loop_after_another(
    fake_server: tuple[str, FakeServer],
) -> None:
    url, server = fake_server
    backend = OpenAICompatibleBackend("loops", base_url=url, model=MODEL, timeout_s=2.0)

    async def once() -> str:
        try:
            return (await backend.generate(ask(1)))[0].text
        finally:
            await backend.aclose()

    assert asyncio.run(once()) == asyncio.run(once()) == expected(11, 0)
    assert server.request_count == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("2", 2.0), (" 0.5 ", 0.5), ("0", 0.0), (None, None), ("soon", None), ("-1", None)],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (10, 2.5, 5.0)],
)
def test_backoff_doubles_with_jitter_up_to_a_cap(attempt: int, low: float, high: float) -> None:
    rng = random.Random(0)
    delays = [backoff_delay(attempt, 0.5, 5.0, rng) for _ in range(50)]
    assert all(low <= d <= high for d in delays)
    assert len(set(delays)) > 1


async def test_a_server_that_is_not_there_ends_in_a_connection_error(
    make_backend: MakeBackend,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(BackendError) as caught:
        await make_backend(url, max_retries=1).generate(ask(2))
    assert str(caught.value).startswith(
        f"model 'qwen': gave up after 2 attempts at {url}: connection error: "
    )


@pytest.mark.parametrize(
    ("message", "rejects_n"),
    [
        ("n > 1 is not supported, use n=1", True),
        ("'n' must be 1", True),
        ("Unknown parameter: n", True),
        ("n: Input should be less than or equal to 1", True),
        ("only one completion choice is allowed", True),
        ("invalid tool_choice", False),
        ("n_predict too big", False),
        ("model not found", False),
        ("can't parse messages", False),
    ],
)
def test_which_400_messages_mean_n_is_unsupported(message: str, rejects_n: bool) -> None:
    assert bool(REJECTS_N.search(message)) is rejects_n
