"""Reading replies: a server's garbage is a BackendError; a bug in our code surfaces as itself."""

from __future__ import annotations

import pytest

from slm_mux.backends import GenerationRequest, OpenAICompatibleBackend
from slm_mux.backends.openai import wire
from slm_mux.backends.openai.wire import MalformedReply, parse_completions, server_message
from slm_mux.errors import BackendError
from slm_mux.testing import run_fake_server


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "malformed JSON in response"),
        (b"\xff\xfe{}", "malformed JSON in response"),
        (b"[1, 2]", "malformed response: no 'choices' list"),
        (b'{"choices": {"0": {}}}', "malformed response: no 'choices' list"),
        (b'{"choices": []}', "response has empty 'choices'"),
        (b'{"choices": [3]}', "malformed response: a choice has no 'message'"),
        (b'{"choices": [{"message": "hi"}]}', "malformed response: a choice has no 'message'"),
    ],
)
def test_a_reply_that_is_no_chat_completion_is_a_backend_error(payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedReply, match=f"^{reason}$") as caught:
        parse_completions(payload, 0.5)
    assert isinstance(caught.value, BackendError)


def test_odd_fields_read_as_empty_text_and_unknown_counts() -> None:
    payload = (
        b'{"choices": [{"message": {"content": 7}, "finish_reason": 3},'
        b' {"message": {"content": "4"}, "finish_reason": "stop"}],'
        b' "usage": {"prompt_tokens": true, "completion_tokens": -5}}'
    )
    first, second = parse_completions(payload, 0.5)
    assert (first.text, first.finish_reason) == ("", None)
    assert (second.text, second.finish_reason) == ("4", "stop")
    assert [c.prompt_tokens for c in (first, second)] == [None, None]
    assert [c.completion_tokens for c in (first, second)] == [None, None]


def test_token_counts_are_split_across_the_choices() -> None:
    payload = (
        b'{"choices": [{"message": {"content": "ab"}}, {"message": {"content": "abcdef"}}],'
        b' "usage": {"prompt_tokens": 11, "completion_tokens": 8}}'
    )
    completions = parse_completions(payload, 0.5)
    assert [c.prompt_tokens for c in completions] == [6, 5]
    assert [c.completion_tokens for c in completions] == [2, 6]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"error": {"message": "bad  model\\n name"}}', "bad model name"),
        (b'{"message": "no"}', "no"),
        (b"plain text", "plain text"),
        (b"", "Bad Request"),
    ],
)
def test_the_servers_own_error_message(content: bytes, message: str) -> None:
    assert server_message(content, "Bad Request") == message


async def test_a_bug_in_our_parsing_surfaces_instead_of_failing_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(total: int | None, weights: list[int]) -> list[int | None]:
        raise TypeError("a bug in our own code")

    monkeypatch.setattr(wire, "split_tokens", broken)
    request = GenerationRequest([{"role": "user", "content": "2+2?"}], 1, 0.3, 16, seed=1)
    with run_fake_server() as (url, server):
        backend = OpenAICompatibleBackend("m", base_url=url, model="m", max_retries=3)
        try:
            with pytest.raises(TypeError, match="a bug in our own code"):
                await backend.generate(request)
        finally:
            await backend.aclose()
        assert server.request_count == 1  # not retried, not turned into a BackendError
    assert [s.errors for s in backend.replica_stats()] == [1]
