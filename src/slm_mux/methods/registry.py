"""The one list of methods: every consumer (compare, serve, the live path, the offline
evaluation, the command line's ``--methods``) reads it.

A method is registered by decorating its function with :func:`method`:

* ``kind="sampled"``: a *vote* over one question's independent samples, a pure function
  ``(Ballot) -> Vote`` (``slm-mux``, ``agent-forest``, ``sc``, ``first-sample``,
  ``single``, ``oracle``);
* ``kind="discussion"``: an async function over a :class:`~slm_mux.methods.base.Caller`
  that makes its own calls (``debate``, ``moa``, ``mav``), with a settings dataclass and
  a cost formula.

Where a method is offered is declared beside it: ``live`` (``serve`` and
:func:`slm_mux.live.answer`), ``compare`` (``slm-mux compare``) and ``offline`` (``eval``:
``"pool"`` for one score over the pool, ``"per-model"`` for one score per model, scored
vectorised by :mod:`slm_mux.analysis.evaluate`). Adding a method is one decorated
function and its test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from slm_mux.methods.base import Method, Settings
from slm_mux.tasks.base import Task

Kind = Literal["sampled", "discussion"]
Offline = Literal["pool", "per-model"]


@dataclass(frozen=True)
class Ballot:
    """One question's independent answers and what a vote may use.

    ``answers`` per model in pool order (a failed model is absent); ``k`` the samples
    asked of each model; ``accuracy`` validation accuracy (confidence ties);
    ``best`` the best validation model (ties to pool order); ``reference`` the
    question's reference answer (``oracle`` only; ``None`` live).
    """

    answers: Mapping[str, Sequence[str | None]]
    task: Task
    k: Mapping[str, int]
    accuracy: Mapping[str, float]
    best: str
    reference: str | None = None


@dataclass(frozen=True)
class Vote:
    """What a vote submits for one question.

    ``answers``: one answer for every method but ``single``, which submits all of the
    best model's samples (its score on a question is the share of them that is
    correct). ``model``: SLM-MUX's winning model, or the one model a single-model
    method read; ``confidence`` and ``votes`` (per model, answer -> count) are SLM-MUX's.
    """

    answers: tuple[str | None, ...]
    model: str | None = None
    confidence: float | None = None
    votes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def answer(self) -> str | None:
        """The submitted answer (the first one)."""
        return self.answers[0] if self.answers else None

    def score(self, task: Task, reference: str) -> float:
        """The share of :attr:`answers` that is correct (0 with none)."""
        if not self.answers:
            return 0.0
        return sum(task.grade(a, reference) for a in self.answers) / len(self.answers)


VoteRule = Callable[[Ballot], Vote]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    ``vote`` is set for sampled methods, ``run`` and ``settings`` for discussion
    methods; ``calls_per_question(M, settings)`` is the calls per question for ``M``
    models on a server that honours ``n`` (a vote over samples: one per model).
    ``model_column``: the comparison table names the best model beside the method
    (``sc``, ``first-sample``).
    """

    name: str
    kind: Kind
    summary: str
    vote: VoteRule | None = None
    run: Method | None = None
    settings: type[Settings] = Settings
    calls_per_question: Callable[[int, Any], int] = lambda models, settings: models
    live: bool = False
    compare: bool = False
    offline: Offline | None = None
    model_column: bool = False
    order: int = 0


REGISTRY: dict[str, MethodSpec] = {}
"""Every registered method by name (read it through the functions below, in table order)."""

_F = TypeVar("_F", bound=Callable[..., Any])


def method(
    name: str,
    *,
    kind: Kind,
    summary: str,
    order: int,
    settings: type[Settings] = Settings,
    calls: Callable[[int, Any], int] | None = None,
    live: bool = False,
    compare: bool = False,
    offline: Offline | None = None,
    model_column: bool = False,
) -> Callable[[_F], _F]:
    """Register the decorated function as method ``name`` (see the module docstring)."""
    if kind == "discussion" and calls is None:
        raise ValueError(f"discussion method {name!r} needs its cost formula (calls=)")

    def register(function: _F) -> _F:
        if name in REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        sampled = kind == "sampled"
        REGISTRY[name] = MethodSpec(
            name=name,
            kind=kind,
            summary=summary,
            vote=function if sampled else None,
            run=None if sampled else function,
            settings=settings,
            **({"calls_per_question": calls} if calls is not None else {}),
            live=live,
            compare=compare,
            offline=offline,
            model_column=model_column,
            order=order,
        )
        return function

    return register


def _loaded() -> dict[str, MethodSpec]:
    """Every method (the built-in ones registered), in table order."""
    import slm_mux.methods  # noqa: F401  (registers the built-in methods)

    return dict(sorted(REGISTRY.items(), key=lambda item: item[1].order))


def get_method(name: str) -> MethodSpec:
    """The method named ``name``; ``KeyError`` when there is none."""
    return _loaded()[name]


def discussion_methods() -> dict[str, MethodSpec]:
    """The discussion methods by name, in table order."""
    return {n: s for n, s in _loaded().items() if s.kind == "discussion"}


def compare_methods() -> list[str]:
    """Every method ``compare`` runs, in table order (the command line's ``--methods``)."""
    return [s.name for s in _loaded().values() if s.compare]


def shared_methods() -> list[str]:
    """The methods ``compare`` computes from one shared set of independent samples."""
    return [s.name for s in _loaded().values() if s.compare and s.kind == "sampled"]


def live_methods() -> list[str]:
    """Every method ``serve`` and :func:`slm_mux.live.answer` offer: the sampled ones,
    then the discussion ones."""
    specs = sorted((s for s in _loaded().values() if s.live), key=lambda s: s.kind != "sampled")
    return [s.name for s in specs]


def sampled_live_methods() -> list[str]:
    """The live methods that vote over ``k`` independent samples per model."""
    return [s.name for s in _loaded().values() if s.live and s.kind == "sampled"]


def offline_methods() -> list[MethodSpec]:
    """The methods the offline evaluation scores, in report order."""
    return [s for s in _loaded().values() if s.offline is not None]
