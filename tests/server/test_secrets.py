"""An upstream that echoes the request's key: nothing of the key, and nothing of the
upstream's text, reaches a ``serve`` client; nothing of the key reaches the store,
``status``, ``status --json`` or stderr."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from slm_mux.backends import OpenAICompatibleBackend
from slm_mux.cli import main
from slm_mux.members import Member
from slm_mux.server.failures import public_message, public_reason, reason_class
from slm_mux.testing import FakeServer, Fault, run_fake_server

from .helpers import Serve, scripted_pool

KEY = "sk-live-0123456789abcdef"
QUESTION = [{"role": "user", "content": "What is 2+2?"}]
UPSTREAM_TEXT = "bad key"
"""What the echoing upstream writes before the header it echoes."""


@pytest.fixture
def echoing(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FakeServer]]:
    """A fake server whose next requests are answered 401 quoting their Authorization."""
    monkeypatch.setenv("SLM_MUX_TEST_KEY", KEY)
    with run_fake_server() as (url, server):
        server.faults.push(*[Fault.echo_authorization(401)] * 20)
        yield url, server


def _member(url: str, name: str = "remote") -> Member:
    backend = OpenAICompatibleBackend(
        name, base_url=url, model=name, api_key_env="SLM_MUX_TEST_KEY", max_retries=0
    )
    return Member(backend, k=3)


def _post(url: str, model: str) -> httpx.Response:
    return httpx.post(f"{url}/chat/completions", json={"model": model, "messages": QUESTION})


@pytest.mark.parametrize("model", ["slm-mux", "remote"])
def test_a_client_gets_our_summary_and_never_the_upstream_text(
    serve: Serve,
    echoing: tuple[str, FakeServer],
    model: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, server = echoing
    with caplog.at_level(logging.WARNING, "slm_mux"), serve([_member(url)]) as base:
        reply = _post(base, model)
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was echoed
    assert reply.status_code == 502
    message = reply.json()["error"]["message"]
    assert "model 'remote': upstream HTTP 401 (authentication failed)" in message
    for leaked in (KEY, UPSTREAM_TEXT, "Bearer", url):
        assert leaked not in reply.text
    # The server log has the whole reason, with the key redacted.
    assert "bad key Bearer ***" in caplog.text
    assert KEY not in caplog.text


def test_an_answer_despite_a_failing_model_names_it_with_our_summary(
    serve: Serve, echoing: tuple[str, FakeServer]
) -> None:
    url, _ = echoing
    members = [*scripted_pool({"alpha": {"*": ["Answer: 4"]}}), _member(url)]
    with serve(members) as base:
        reply = _post(base, "slm-mux")
    assert reply.status_code == 200
    assert reply.json()["slm_mux"]["failed"] == {
        "remote": "upstream HTTP 401 (authentication failed)"
    }
    assert KEY not in reply.text and UPSTREAM_TEXT not in reply.text


def test_collect_keeps_the_key_out_of_the_store_status_and_stderr(
    echoing: tuple[str, FakeServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = echoing
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "models:\n"
        f"  - {{name: remote, backend: openai, base_url: '{url}', model: remote,\n"
        "     api_key_env: SLM_MUX_TEST_KEY, max_retries: 0}\n"
    )
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "q1", "question": "2+2?", "answer": "4"}) + "\n")
    store = str(tmp_path / "s.db")
    argv = ["collect", "--pool", str(pool), "--task", "exact", "--data", str(questions)]
    assert main([*argv, "--store", store, "--quiet"]) == 3
    assert main(["status", "--store", store]) == 0
    assert main(["status", "--store", store, "--json"]) == 0
    printed = capsys.readouterr()
    assert "bad key Bearer ***" in printed.err  # the failure is shown, redacted
    assert KEY not in printed.out + printed.err
    assert KEY.encode() not in Path(store).read_bytes()


@pytest.mark.parametrize(
    ("reason", "summary"),
    [
        ("401 from http://h/v1: bad key Bearer ***", "upstream HTTP 401 (authentication failed)"),
        (
            "gave up after 5 attempts at http://h:8/v1: 503: busy",
            "upstream HTTP 503 (server error)",
        ),
        (
            "gave up after 2 attempts at http://h/v1: 429: slow down",
            "upstream HTTP 429 (rate limited)",
        ),
        ("418 from http://h/v1: teapot", "upstream HTTP 418 (refused)"),
        (
            "gave up after 5 attempts at http://127.0.0.1:1/v1: connection error: refused",
            "connection failed",
        ),
        ("gave up after 1 attempts at http://h/v1: no response within 2s", "timed out"),
        ("gave up after 1 attempts at http://h/v1: malformed JSON in response", "malformed reply"),
        ("got 1 of 3 replies", "too few replies"),
        (
            "the prompt has 316 tokens, more than its context of 128 positions leaves room for",
            "prompt too long",
        ),
        ("out of device memory even for one sequence", "out of memory"),
        ("no scripted answer for 'What is 401 from x: '", "failed"),
        ("a 401 in the middle: of an unknown text", "failed"),
    ],
)
def test_each_reason_the_backends_write_has_a_class(reason: str, summary: str) -> None:
    assert reason_class(reason) == summary
    assert public_reason("m", f"model 'm': {reason}") == summary


def test_a_failed_request_names_each_known_model_in_order() -> None:
    message = (
        "every model failed; b: model 'b': 401 from http://h/v1: model 'evil': x; "
        "a: model 'a': gave up after 1 attempts at http://h/v1: connection error: y"
    )
    assert public_message(message, ["a", "b"]) == (
        "model 'b': upstream HTTP 401 (authentication failed); model 'a': connection failed"
    )
    assert public_message("nothing known", ["a"]) == "the models failed"
