"""The scripted backend: answers from a mapping or a function, deterministically."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from slm_mux.backends import GenerationRequest, ScriptedBackend, scripted
from slm_mux.errors import BackendError, InputError


def ask(question: str, n: int = 3) -> GenerationRequest:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": question}]
    return GenerationRequest(messages, n=n, temperature=0.3, max_tokens=16, seed=1)


SCRIPT = {"capital": ["Paris"], "2 + 2": ["4", "5"], "*": ["I don't know"]}


@pytest.mark.parametrize(
    ("question", "n", "texts"),
    [
        ("What is 2 + 2?", 5, ["4", "5", "4", "5", "4"]),
        ("The capital of France?", 2, ["Paris", "Paris"]),
        ("Who wrote Hamlet?", 1, ["I don't know"]),
    ],
)
async def test_a_mapping_picks_by_substring_and_cycles(
    question: str, n: int, texts: list[str]
) -> None:
    completions = await ScriptedBackend("s", SCRIPT).generate(ask(question, n))
    assert [c.text for c in completions] == texts


async def test_without_a_default_an_unmatched_question_is_an_error() -> None:
    backend = ScriptedBackend("s", {"capital": ["Paris"]})
    with pytest.raises(BackendError, match=r"^model 's': no scripted answer for 'Who wrote"):
        await backend.generate(ask("Who wrote Hamlet?"))


async def test_a_function_gets_the_question_and_sample_index() -> None:
    backend = ScriptedBackend("f", lambda question, i: f"{question[:4]}#{i}")
    completions = await backend.generate(ask("abcdefg", 2))
    assert [c.text for c in completions] == ["abcd#0", "abcd#1"]
    assert backend.requests == [ask("abcdefg", 2)]


async def test_latency_and_word_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(scripted, "asyncio", SimpleNamespace(sleep=sleep))
    backend = ScriptedBackend("s", {"*": ["one two three"]}, latency_s=0.05)
    completions = await backend.generate(ask("a b c d", 2))
    assert slept == [0.05]  # once per request, not per sample
    assert [(c.prompt_tokens, c.completion_tokens) for c in completions] == [(3, 3), (3, 3)]
    assert backend.usage.prompt_tokens == 6  # "be brief" + "a b c d", once
    assert backend.usage.completion_tokens == 6


def test_an_entry_without_responses_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"^model 's': script entry '\*' has no responses$"):
        ScriptedBackend("s", {"*": []})
