"""The fake OpenAI-compatible server, spoken to with plain httpx."""

from __future__ import annotations

import httpx
import pytest

from slm_mux.testing import FakeServer, FakeServerConfig, Fault, echo_answer, run_fake_server
from slm_mux.testing.fake_server import FaultQueue


def chat(url: str, **body: object) -> httpx.Response:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], **body}
    return httpx.post(f"{url}/chat/completions", json=payload, timeout=5.0)


def test_lists_its_models_and_404s_the_others() -> None:
    config = FakeServerConfig(answers={"alpha": echo_answer, "beta": echo_answer})
    with run_fake_server(config) as (url, server):
        listed = httpx.get(f"{url}/models", timeout=5.0).json()
        assert [m["id"] for m in listed["data"]] == ["alpha", "beta"]
        missing = chat(url)
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "model 'm' not found"
        assert server.request_count == 1


@pytest.mark.parametrize(("honour_n", "choices"), [(True, 3), (False, 1)])
def test_honours_n_only_when_told(honour_n: bool, choices: int) -> None:
    with run_fake_server(FakeServerConfig(honour_n=honour_n)) as (url, _):
        data = chat(url, n=3, seed=4).json()
        assert [c["message"]["content"] for c in data["choices"]] == [
            echo_answer("m", "hi there", 4, i) for i in range(choices)
        ]
        assert data["usage"]["prompt_tokens"] == 2


def test_max_tokens_truncates_words_with_finish_reason_length(
    fake_server: tuple[str, FakeServer],
) -> None:
    url, _ = fake_server
    choice = chat(url, max_tokens=2).json()["choices"][0]
    assert choice["message"]["content"] == "m seed=None"
    assert choice["finish_reason"] == "length"


def test_faults_apply_to_the_next_requests_in_order(fake_server: tuple[str, FakeServer]) -> None:
    url, server = fake_server
    server.faults.push(
        Fault.error(429, "busy", retry_after=1.5), Fault.malformed_json(), Fault.empty_choices()
    )
    limited = chat(url)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1.5")
    with pytest.raises(ValueError):
        chat(url).json()
    assert chat(url).json()["choices"] == []
    assert chat(url).status_code == 200
    assert len(server.faults) == 0
    assert server.request_count == 4


def test_a_dropped_connection_is_a_protocol_error(fake_server: tuple[str, FakeServer]) -> None:
    url, server = fake_server
    server.faults.push(Fault.drop_connection())
    with pytest.raises(httpx.RemoteProtocolError):
        chat(url)
    assert chat(url).status_code == 200


def test_a_slow_fault_delays_the_answer(fake_server: tuple[str, FakeServer]) -> None:
    url, server = fake_server
    server.faults.push(Fault.slow(5.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            timeout=0.2,
        )
    assert server.request_count == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "m", "messages": []}, "'model' and a non-empty 'messages' list are required"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, "'n' must be"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
    ],
)
def test_rejects_bad_requests(
    fake_server: tuple[str, FakeServer], body: dict[str, object], message: str
) -> None:
    url, _ = fake_server
    response = httpx.post(f"{url}/chat/completions", json=body, timeout=5.0)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_random_faults_follow_their_seed_and_rate() -> None:
    def draws(seed: int) -> list[bool]:
        queue = FaultQueue()
        queue.push(Fault.malformed_json())
        queue.randomly(Fault.error(500), 0.25, seed=seed)
        first = queue.pop()
        assert first is not None and first.kind == "malformed_json"
        return [queue.pop() is not None for _ in range(400)]

    assert draws(1) == draws(1) != draws(2)
    assert 60 <= sum(draws(1)) <= 140
