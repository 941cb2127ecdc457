"""Answering one chat request with SLM-MUX, a comparison method, or one pool model.

This is the core of ``slm-mux serve``, usable without a server: :func:`answer` takes a
chat request's messages and the pool's members (backends built once, shared by every
request) and returns an :class:`~slm_mux.engine.Answer`. Per-request settings (``k``,
temperature, token limit, seed) are applied to copies of the members; no backend is
built per request.

Every live method of the registry (:func:`slm_mux.methods.live_methods`) runs through
:func:`slm_mux.engine.run` with a :class:`~slm_mux.calls.LiveCaller`, the same path as
:class:`slm_mux.Mux`: ``slm-mux`` (samples in the rounds of an adaptive policy, if
given), ``agent-forest`` (``k`` samples per model, never adaptive), ``debate``, ``moa``
and ``mav`` (unset roles go to the best validation model). A pool model's name passes
the request through to that model as it is.

One rule for every method: when no answer came and some model failed, the request
failed (``BackendError`` naming each model's reason; ``serve`` answers 502).

Cancelling the awaiting task (a client that hung up) cancels every call in flight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from slm_mux.adaptive import Policy
from slm_mux.calls import LiveCaller
from slm_mux.engine import FULL, Answer, run
from slm_mux.errors import BackendError, InputError
from slm_mux.members import Member
from slm_mux.methods import live_methods
from slm_mux.methods.prompts import with_system
from slm_mux.tasks.base import (
    Message,
    Question,
    Task,
    WrappedTask,
    empty_question,
    question_hash,
)


class ChatTask(WrappedTask):
    """A task wrapped around one chat request.

    :meth:`messages` gives the request's messages before its last user message (system
    messages and earlier turns), then the base task's prompt for that last user message,
    then whatever followed it; a base-task system message is merged into the request's
    system message. Extraction, normal forms, grading and clustering are the base task's.
    """

    def __init__(self, base: Task, messages: Sequence[Message]) -> None:
        last = next(
            (i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"),
            None,
        )
        if last is None:
            raise InputError("the request has no user message")
        super().__init__(base)
        self._before = list(messages[:last])
        self._after = list(messages[last + 1 :])
        text = messages[last].get("content", "")
        problem = empty_question(text)
        if problem is not None:
            raise InputError(problem)
        self.question = Question(question_hash(text), text, "")
        """The last user message as a question (its id: the hash of its text)."""

    def messages(self, question: Question) -> list[Message]:
        prompt = self.base.messages(question)
        head = self._before
        for message in prompt:
            if message["role"] == "system":
                head = with_system(message["content"], head)
        turns = [m for m in prompt if m["role"] != "system"]
        return [*head, *turns, *self._after]


def model_names(members: Sequence[Member]) -> list[str]:
    """Every name :func:`answer` accepts: the live methods, then the pool's models."""
    methods = live_methods()
    return [*methods, *(m.name for m in members if m.name not in methods)]


async def answer(
    method: str,
    messages: Sequence[Message],
    members: Sequence[Member],
    *,
    task: Task,
    validation_accuracy: Mapping[str, float] | None = None,
    k: int | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
    settings: Any = None,
    n: int = 1,
    adaptive: Policy | None = None,
) -> Answer:
    """Answer one chat request with ``method`` (see the module docstring).

    ``k`` (samples per model for the votes over samples), ``temperature``,
    ``max_tokens`` and ``seed`` override each member's own for this request; ``settings``
    are the discussion method's (default: its defaults); ``n`` replies are allowed for a
    pass-through only; ``adaptive`` is SLM-MUX's sampling policy (default ``full``).
    Raises ``InputError`` for an unknown method or bad request and ``BackendError`` when
    no answer came because models failed.
    """
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("k", k),
            ("temperature", temperature),
            ("max_tokens", max_tokens),
            ("seed", seed),
        )
        if value is not None
    }
    pool = [replace(m, **changes) for m in members] if changes else list(members)
    if method not in live_methods():
        member = next((m for m in pool if m.name == method), None)
        if member is None:
            names = ", ".join(model_names(members))
            raise InputError(f"unknown model {method!r}; choose from {names}")
        return await _pass_through(member, list(messages), n)
    if n != 1:
        raise InputError(f"model {method!r} gives one reply per request, not n={n}")
    chat = ChatTask(task, messages)
    policy = adaptive if method == "slm-mux" and adaptive is not None else FULL
    caller = LiveCaller({m.name: m for m in pool}, chat.question, method)
    found = await run(
        method,
        chat.question,
        chat,
        pool,
        caller,
        policy=policy,
        accuracy=validation_accuracy,
        settings=settings,
    )
    if found.answer is None and found.failed:
        everyone = all(texts is None for _, _, texts in caller.record)
        reasons = "; ".join(f"{model}: {error}" for model, error in found.failed.items())
        raise BackendError(f"{'every model failed' if everyone else 'no answer'}; {reasons}")
    return found


async def _pass_through(member: Member, messages: list[Message], n: int) -> Answer:
    """One call to ``member`` with the request's messages as they are."""
    caller = LiveCaller({member.name: member}, Question("", "", ""), member.name)
    sent = await caller.send(member, "", messages, n, member.seed)
    return Answer(
        method=member.name,
        question=messages[-1].get("content", "") if messages else "",
        answer=None,
        text=sent.texts[0],
        model=member.name,
        confidence=None,
        votes={},
        failed={},
        prompt_tokens=sent.prompt_tokens or 0,
        completion_tokens=sent.completion_tokens or 0,
        calls=sent.responses,
        texts=tuple(sent.texts),
    )
