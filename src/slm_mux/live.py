"""Answering one chat request with SLM-MUX, a comparison method, or one pool model.

This is the core of ``slm-mux serve``, usable without a server: :func:`answer` takes a
chat request's messages and the pool's members (backends built once, shared by every
request) and returns a :class:`LiveAnswer`. Per-request settings (``k``, temperature,
token limit, seed) are applied to copies of the members; no backend is built per request.

* ``"slm-mux"``: every model samples ``k`` answers at once (or in the rounds of an
  adaptive policy) and the SLM-MUX rule picks one (:func:`slm_mux.engine.sample_rounds`,
  the same code as :class:`slm_mux.Mux`).
* ``"agent-forest"``: ``k`` samples per model (never adaptive), the plain majority of
  all of them pooled.
* ``"debate"``, ``"moa"``, ``"mav"``: the method of :mod:`slm_mux.methods` through a
  :class:`LiveCaller`; unset roles (aggregator, generator) go to the best validation model.
* a pool model's name: the request passes through to that model as it is.

Cancelling the awaiting task (a client that hung up) cancels every call in flight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from slm_mux.adaptive import Policy
from slm_mux.engine import ModelSamples, mux_decision, off_loop_if_slow, sample_rounds, sample_seed
from slm_mux.errors import BackendError, InputError
from slm_mux.members import Member
from slm_mux.methods import METHODS, Settings, vote
from slm_mux.methods.prompts import with_system
from slm_mux.selection import tie_break_rank
from slm_mux.tasks.base import Message, Question, Task, question_hash

SAMPLED_METHODS = ("slm-mux", "agent-forest")
"""Methods that vote over independent samples (``k`` per model)."""

LIVE_METHODS = (*SAMPLED_METHODS, *METHODS)
"""Every method :func:`answer` runs, besides passing through to one pool model."""

ROLES = ("aggregator", "generator")
"""Settings fields naming a pool model; ``None`` resolves to the best validation model."""


class ChatTask(Task):
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
        self.base = base
        self.name = base.name
        self._before = list(messages[:last])
        self._after = list(messages[last + 1 :])
        text = messages[last].get("content", "")
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

    def extract(self, text: str) -> str | None:
        return self.base.extract(text)

    def canonical(self, answer: str) -> str:
        return self.base.canonical(answer)

    def grade(self, answer: str | None, reference: str) -> bool:
        return self.base.grade(answer, reference)

    def equivalent(self, first: str, second: str) -> bool:
        return self.base.equivalent(first, second)

    def cluster(self, answers: Sequence[str]) -> list[int]:
        return self.base.cluster(answers)


@dataclass(frozen=True)
class LiveAnswer:
    """The answer to one chat request.

    ``text`` is the full text of a reply that gave the selected answer (``""`` when
    there is none); ``model`` the SLM-MUX winner, else the model whose reply ``text``
    is. ``confidence`` is SLM-MUX's only; ``votes`` (per model, answer -> count) only
    for ``slm-mux`` and ``agent-forest``. ``failed`` names the models whose calls
    failed after retries. Tokens are summed over every call, as the servers reported
    them; ``calls`` counts the responses received. ``texts`` holds every reply of a
    pass-through request (``n`` of them), else just ``text``. For ``slm-mux`` and
    ``agent-forest``, ``policy``'s ``rounds`` of sampling drew ``samples`` of the ``samples_full``
    that full sampling draws; ``tokens_saved`` estimates the completion tokens not spent
    (mean per drawn sample times samples not drawn; ``None``: unknown).
    """

    method: str
    answer: str | None
    text: str
    model: str | None
    confidence: float | None
    votes: dict[str, dict[str, int]]
    failed: dict[str, str]
    prompt_tokens: int
    completion_tokens: int
    calls: int
    texts: tuple[str, ...] = ()
    policy: str | None = None
    rounds: int = 0
    samples: int = 0
    samples_full: int = 0
    tokens_saved: int | None = None


def best_model(members: Sequence[Member], accuracy: Mapping[str, float]) -> str:
    """The model with the best validation accuracy; ties and unknown ones go to pool order."""
    ranks = tie_break_rank([accuracy.get(m.name) for m in members])
    return members[int(ranks.argmin())].name


def resolve_roles(settings: Settings, best: str) -> Settings:
    """``settings`` with every unset role (aggregator, generator) given to ``best``."""
    unset = {role: best for role in ROLES if getattr(settings, role, best) is None}
    return replace(settings, **unset)


@dataclass(frozen=True)
class Sent:
    """What one call returned: its reply texts, reported tokens (``None``: unknown) and
    the number of responses it took."""

    texts: list[str]
    prompt_tokens: int | None
    completion_tokens: int | None
    responses: int


async def send(member: Member, messages: list[Message], n: int, seed: int | None) -> Sent:
    """One call of ``n`` replies through the member's backend, with its settings."""
    request = member.request(messages, n, seed)
    texts: dict[int, str] = {}
    responses = prompt_tokens = completion_tokens = 0
    known_prompt = known_completion = True
    async for batch in member.backend.stream(request):
        responses += 1
        for index, completion in batch:
            texts[index] = completion.text
            known_prompt &= completion.prompt_tokens is not None
            known_completion &= completion.completion_tokens is not None
            prompt_tokens += completion.prompt_tokens or 0
            completion_tokens += completion.completion_tokens or 0
    if sorted(texts) != list(range(n)):
        raise BackendError(f"model {member.name!r}: got {len(texts)} of {n} replies")
    return Sent(
        texts=[texts[i] for i in range(n)],
        prompt_tokens=prompt_tokens if known_prompt else None,
        completion_tokens=completion_tokens if known_completion else None,
        responses=responses,
    )


@dataclass
class LiveCaller:
    """The :class:`~slm_mux.methods.Caller` of one method on one request.

    It sends every call through the member's backend and keeps, in the order the
    calls were made, each call's step, model and replies (``None`` while in flight or
    failed), the tokens and the responses received.
    """

    members: Mapping[str, Member]
    question: Question
    method: str
    record: list[tuple[str, str, list[str] | None]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    async def __call__(
        self, model: str, step: str, messages: list[Message], *, n: int = 1
    ) -> list[str]:
        """The ``n`` replies of ``model`` to ``messages``."""
        member = self.members.get(model)
        if member is None:
            raise InputError(f"model {model!r} is not in the pool")
        slot = len(self.record)
        self.record.append((step, model, None))
        seed_key = f"{self.question.id}:{self.method}:{step}:{model}"
        sent = await send(member, messages, n, sample_seed(member.seed, seed_key, 0))
        self.record[slot] = (step, model, sent.texts)
        self.prompt_tokens += sent.prompt_tokens or 0
        self.completion_tokens += sent.completion_tokens or 0
        self.calls += sent.responses
        return sent.texts


def model_names(members: Sequence[Member]) -> list[str]:
    """Every name :func:`answer` accepts: the methods, then the pool's models."""
    return [*LIVE_METHODS, *(m.name for m in members if m.name not in LIVE_METHODS)]


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
) -> LiveAnswer:
    """Answer one chat request with ``method`` (see the module docstring).

    ``k`` (samples per model for ``slm-mux`` and ``agent-forest``), ``temperature``,
    ``max_tokens`` and ``seed`` override each member's own for this request; ``settings``
    are the discussion method's (default: its defaults); ``n`` replies are allowed for a
    pass-through only; ``adaptive`` is SLM-MUX's sampling policy (default ``full``).
    Raises ``InputError`` for an unknown method or bad request and ``BackendError`` when
    no model answered.
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
    accuracy = validation_accuracy or {}
    if method not in LIVE_METHODS:
        member = next((m for m in pool if m.name == method), None)
        if member is None:
            names = ", ".join(model_names(members))
            raise InputError(f"unknown model {method!r}; choose from {names}")
        return await _pass_through(member, list(messages), n)
    if n != 1:
        raise InputError(f"model {method!r} gives one reply per request, not n={n}")
    chat = ChatTask(task, messages)
    if method in SAMPLED_METHODS:
        policy = adaptive if method == "slm-mux" and adaptive is not None else Policy("full")
        return await _sampled(method, chat, pool, accuracy, policy)
    spec = METHODS[method]
    chosen = resolve_roles(settings or spec.settings(), best_model(pool, accuracy))
    return await _discussion(method, chat, pool, chosen)


async def _pass_through(member: Member, messages: list[Message], n: int) -> LiveAnswer:
    """One call to ``member`` with the request's messages as they are."""
    sent = await send(member, messages, n, member.seed)
    return LiveAnswer(
        method=member.name,
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


async def _sampled(
    method: str,
    chat: ChatTask,
    pool: Sequence[Member],
    accuracy: Mapping[str, float],
    policy: Policy,
) -> LiveAnswer:
    """``slm-mux`` or ``agent-forest`` over independent samples drawn by ``policy``."""
    sampled = await sample_rounds(
        pool, chat, chat.question, policy=policy, validation_accuracy=accuracy
    )
    results = sampled.results
    k = {m.name: m.k for m in pool}

    def choose() -> tuple[str | None, str | None, float | None, dict[str, dict[str, int]]]:
        decision = mux_decision(results, chat, accuracy, k)
        if method == "slm-mux":
            return decision.answer, decision.model, decision.confidence, decision.votes
        pooled = [found for r in results for found in r.answers]
        return vote(pooled, chat), None, None, decision.votes

    final, winner, confidence, votes = await off_loop_if_slow(chat.base, choose)
    candidates = [r for r in results if r.model == winner] if winner is not None else results
    source = next(
        (
            (r.model, c.text)
            for r in candidates
            for c, found in zip(r.completions, r.answers, strict=False)
            if final is not None and found == final
        ),
        (winner, ""),
    )
    return LiveAnswer(
        method=method,
        answer=final,
        text=source[1],
        model=source[0],
        confidence=confidence,
        votes=votes,
        failed={r.model: r.error for r in results if r.error is not None},
        prompt_tokens=_tokens(results, prompt=True),
        completion_tokens=_tokens(results, prompt=False),
        calls=sum(r.responses for r in results),
        texts=(source[1],),
        policy=str(policy),
        rounds=sampled.rounds,
        samples=sampled.drawn,
        samples_full=sampled.full,
        tokens_saved=sampled.tokens_saved,
    )


def _tokens(results: Sequence[ModelSamples], *, prompt: bool) -> int:
    """Prompt (or completion) tokens summed over every model's completions."""
    return sum(
        (c.prompt_tokens if prompt else c.completion_tokens) or 0
        for r in results
        for c in r.completions
    )


async def _discussion(
    method: str, chat: ChatTask, pool: Sequence[Member], settings: Settings
) -> LiveAnswer:
    """``debate``, ``moa`` or ``mav``; ``text`` is the last reply giving the final answer
    (mav's verdicts are no replies to the question: a ``verify/`` step is skipped)."""
    caller = LiveCaller({m.name: m for m in pool}, chat.question, method)
    outcome = await METHODS[method].run(
        chat.question, chat, [m.name for m in pool], caller, settings
    )
    failed: dict[str, str] = {}
    for failure in outcome.detail.get("failures", []):
        failed.setdefault(failure["model"], failure["error"])
    if caller.calls == 0:
        reasons = "; ".join(f"{model}: {error}" for model, error in failed.items())
        raise BackendError(f"every model failed; {reasons}")
    final = outcome.answer

    def source() -> tuple[str | None, str]:
        for step, model, texts in reversed(caller.record):
            if step.startswith("verify/"):
                continue
            for text in reversed(texts or []):
                found = chat.extract(text)
                if final is not None and found is not None and chat.equivalent(found, final):
                    return model, text
        return None, ""

    model, text = await off_loop_if_slow(chat.base, source)
    return LiveAnswer(
        method=method,
        answer=final,
        text=text,
        model=model,
        confidence=None,
        votes={},
        failed=failed,
        prompt_tokens=caller.prompt_tokens,
        completion_tokens=caller.completion_tokens,
        calls=caller.calls,
        texts=(text,),
    )
