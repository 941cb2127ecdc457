"""The votes over one question's independent samples: SLM-MUX and its baselines.

Each is a pure function of a :class:`~slm_mux.methods.registry.Ballot`, registered with
where it is offered. SLM-MUX is :func:`slm_mux.selection.decide`, the same rule
everywhere; the plain majorities are :func:`~slm_mux.methods.base.vote`.

``first-sample`` and ``single`` both read the best validation model alone: ``first-sample``
submits its first sample (what ``compare`` reports), ``single`` submits every drawn sample,
so its score is the model's mean per-sample accuracy (what ``eval`` reports per model).
"""

from __future__ import annotations

from slm_mux.methods.base import vote
from slm_mux.methods.registry import Ballot, Vote, method
from slm_mux.selection import decide


@method(
    "slm-mux",
    kind="sampled",
    order=0,
    summary="the most confident model's majority answer; ties by validation accuracy",
    live=True,
    compare=True,
    offline="pool",
)
def slm_mux(ballot: Ballot) -> Vote:
    """SLM-MUX (:func:`~slm_mux.selection.decide`) over the models that answered."""
    if not ballot.answers:
        return Vote((None,))
    k = {model: ballot.k[model] for model in ballot.answers}
    decision = decide(
        dict(ballot.answers), ballot.task.cluster, k=k, validation_accuracy=ballot.accuracy
    )
    return Vote((decision.answer,), decision.model, decision.confidence, decision.votes)


@method(
    "agent-forest",
    kind="sampled",
    order=20,
    summary="the plain majority of every model's samples pooled (pool order breaks ties)",
    live=True,
    compare=True,
    offline="pool",
)
def agent_forest(ballot: Ballot) -> Vote:
    """The majority of all samples, pooled in model order."""
    pooled = [answer for answers in ballot.answers.values() for answer in answers]
    return Vote((vote(pooled, ballot.task),))


@method(
    "single",
    kind="sampled",
    order=21,
    summary="a model's mean per-sample accuracy (offline, per model)",
    offline="per-model",
)
def single(ballot: Ballot) -> Vote:
    """Every sample of the best model (scored as their share correct)."""
    return Vote(tuple(ballot.answers.get(ballot.best, ())), ballot.best)


@method(
    "sc",
    kind="sampled",
    order=22,
    summary="self-consistency: the majority of one model's samples (the best model's in compare)",
    compare=True,
    offline="per-model",
    model_column=True,
)
def self_consistency(ballot: Ballot) -> Vote:
    """The majority of the best model's samples."""
    answers = ballot.answers.get(ballot.best)
    return Vote((None if answers is None else vote(answers, ballot.task),), ballot.best)


@method(
    "first-sample",
    kind="sampled",
    order=23,
    summary="the best model's first sample (compare's 'single' before it was renamed)",
    compare=True,
    model_column=True,
)
def first_sample(ballot: Ballot) -> Vote:
    """The best model's first sample."""
    answers = ballot.answers.get(ballot.best)
    return Vote((answers[0] if answers else None,), ballot.best)


@method(
    "oracle",
    kind="sampled",
    order=24,
    summary="right when some model's own majority is right (an upper bound; needs the reference)",
    compare=True,
    offline="pool",
)
def oracle(ballot: Ballot) -> Vote:
    """The first model majority that grades correct, else the first model's majority."""
    majorities = [vote(answers, ballot.task) for answers in ballot.answers.values()]
    reference = ballot.reference
    right = (
        None
        if reference is None
        else next((a for a in majorities if ballot.task.grade(a, reference)), None)
    )
    return Vote((right if right is not None else next(iter(majorities), None),))
