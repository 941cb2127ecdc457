"""Offline evaluation: replay SLM-MUX and baselines on stored test samples.

Each trial draws ``k`` of the recorded samples per model and question (without
replacement, kept in recorded order; see :mod:`slm_mux.analysis.draws`) and
scores every method on the draw. Results do not depend on the order models are
given in: a model's draws depend only on (seed, model, question, trial), and
models are otherwise taken in one canonical order, sorted by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slm_mux.analysis.arrays import BoolArray, IntArray, SampleArrays
from slm_mux.analysis.draws import bases, draw, slot_keys
from slm_mux.errors import InputError
from slm_mux.methods.registry import offline_methods
from slm_mux.selection import Selection, majority, select, tie_break_rank
from slm_mux.tables import markdown_table


@dataclass(frozen=True)
class Method:
    """An evaluated method; ``model`` is set for the per-model ones (``single``, ``sc``).

    ``kind`` is the name of a method the registry scores offline
    (:func:`slm_mux.methods.offline_methods`). ``str()`` gives its name in JSON and tables:
    ``slm-mux``, ``agent-forest``, ``single:<model>``, ``sc:<model>``, ``oracle``.
    """

    kind: str
    model: str | None = None

    def __str__(self) -> str:
        return self.kind if self.model is None else f"{self.kind}:{self.model}"


SLM_MUX = Method("slm-mux")
AGENT_FOREST = Method("agent-forest")
ORACLE = Method("oracle")


def single(model: str) -> Method:
    """Mean per-sample accuracy of ``model``."""
    return Method("single", model)


def self_consistency(model: str) -> Method:
    """Accuracy of the majority of ``model``'s ``k`` samples."""
    return Method("sc", model)


@dataclass(frozen=True)
class Score:
    """A method's mean accuracy over trials and its population std (ddof=0) across trials."""

    accuracy: float
    std: float

    def to_json(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "std": self.std}


@dataclass(frozen=True)
class Outcome:
    """What SLM-MUX chose on one question in the first trial (``model`` is ``None``: no answer)."""

    question_id: str
    model: str | None
    answer: str | None
    confidence: float
    correct: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "question_id": self.question_id,
            "model": self.model,
            "answer": self.answer,
            "confidence": self.confidence,
            "correct": self.correct,
        }


@dataclass(frozen=True)
class Evaluation:
    """Accuracy per method over ``trials`` draws of ``k`` samples per model and question.

    When ``all_recorded`` (every model has exactly ``k`` samples of every
    question) there is nothing to draw: one pass over the recorded samples
    replaces the trials. ``methods`` holds every :class:`Method`: SLM-MUX,
    Agent Forest, single and self-consistency per model, oracle; models come
    sorted by name. ``model_share`` is how
    often SLM-MUX took each model's answer (fraction of questions, averaged
    over passes), ``no_answer_share`` how often no model voted;
    ``first_trial`` has SLM-MUX's choice per question in the first pass.
    """

    questions: int
    k: int
    trials: int
    seed: int
    all_recorded: bool
    methods: dict[Method, Score]
    model_share: dict[str, float]
    no_answer_share: float
    first_trial: list[Outcome]

    @property
    def models(self) -> list[str]:
        """The evaluated models, sorted by name."""
        return list(self.model_share)

    @property
    def passes(self) -> int:
        """How many draws were scored: one when all recorded samples were used, else ``trials``."""
        return 1 if self.all_recorded else self.trials

    @property
    def draws_summary(self) -> str:
        """``1 pass (all recorded samples)``, or e.g. ``10 trials, seed 0``."""
        if self.all_recorded:
            return "1 pass (all recorded samples)"
        return f"{self.trials} trial{'' if self.trials == 1 else 's'}, seed {self.seed}"

    def to_json(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "k": self.k,
            "trials": self.trials,
            "passes": self.passes,
            "all_recorded": self.all_recorded,
            "seed": self.seed,
            "methods": {str(method): score.to_json() for method, score in self.methods.items()},
            "attribution": {
                "share": dict(self.model_share),
                "no_answer": self.no_answer_share,
                "first_trial": [outcome.to_json() for outcome in self.first_trial],
            },
        }

    def to_markdown(self) -> str:
        """Accuracy per method, and where SLM-MUX's answers came from, as Markdown."""
        methods = markdown_table(
            ("method", "accuracy", "std"),
            [
                (str(method), f"{score.accuracy:.4f}", f"{score.std:.4f}")
                for method, score in self.methods.items()
            ],
            ("left", "right", "right"),
        )
        shares = markdown_table(
            ("SLM-MUX answer from", "share"),
            [
                *((name, f"{share:.4f}") for name, share in self.model_share.items()),
                ("(no answer)", f"{self.no_answer_share:.4f}"),
            ],
            ("left", "right"),
        )
        header = f"{self.questions} test questions, k={self.k}, {self.draws_summary}"
        return f"{header}\n\n{methods}\n{shares}"


def methods_of(models: list[str]) -> list[Method]:
    """The evaluated methods, in report order: the registry's offline methods, a
    per-model one once per model."""
    return [
        Method(spec.name, model)
        for spec in offline_methods()
        for model in (models if spec.offline == "per-model" else [None])
    ]


def evaluate(
    test: SampleArrays,
    *,
    k: int,
    trials: int,
    seed: int,
    validation_accuracy: Mapping[str, float] | None = None,
) -> Evaluation:
    """Score SLM-MUX and the baselines on ``test`` over ``trials`` seeded draws.

    Each trial draws ``k`` samples per model and question uniformly without
    replacement from the recorded ones, keyed by (seed, model name, question
    id, trial) only (:mod:`slm_mux.analysis.draws`): a model's draws do not
    change with the other models or questions evaluated beside it. When every
    model has exactly ``k`` samples of every question, all trials are the
    recorded samples in recorded order and std is 0. Std is the population
    standard deviation (ddof=0) across trials. ``validation_accuracy`` (from
    the validation split only) breaks SLM-MUX confidence ties, then model
    names (sorted); Agent Forest's pooled vote takes the models sorted by name.
    """
    if trials < 1:
        raise InputError(f"trials must be at least 1, got {trials}")
    test.require_samples(k)
    accuracy = validation_accuracy or {}
    if test.models != sorted(test.models):
        test = test.subset(test.models)  # the canonical order
    rank = tie_break_rank([accuracy.get(name) for name in test.models])
    n_models, n_questions, _ = test.codes.shape
    fixed = all_recorded(test, k)
    runs = 1 if fixed else trials
    all_codes, all_correct = test.codes.ravel(), test.sample_correct.ravel()
    names = methods_of(test.models)
    scores = np.empty((runs, len(names)))
    share = np.zeros(n_models + 1)
    first_trial: list[Outcome] = []
    for trial, index in enumerate(drawn_indices(test, k=k, trials=trials, seed=seed)):
        codes = all_codes[index]
        chosen = select(codes, k=k, rank=rank)
        scores[trial] = _scores(test, codes, all_correct[index], chosen)
        share += np.bincount(chosen.model + 1, minlength=n_models + 1) / n_questions
        if trial == 0:
            first_trial = _outcomes(test, chosen)
    means, stds = scores.mean(axis=0), scores.std(axis=0)
    share /= runs
    return Evaluation(
        questions=n_questions,
        k=k,
        trials=trials,
        seed=seed,
        all_recorded=fixed,
        methods={
            name: Score(float(mean), float(std))
            for name, mean, std in zip(names, means, stds, strict=True)
        },
        model_share={name: float(share[m + 1]) for m, name in enumerate(test.models)},
        no_answer_share=float(share[0]),
        first_trial=first_trial,
    )


def all_recorded(test: SampleArrays, k: int) -> bool:
    """Whether every model has exactly ``k`` samples of every question (nothing to draw)."""
    return bool((test.recorded == k).all())


def drawn_indices(test: SampleArrays, *, k: int, trials: int, seed: int) -> Iterator[IntArray]:
    """Per pass, the drawn samples as indices ``[models, questions, k]`` into ``test.codes``
    flattened (one pass in recorded order when :func:`all_recorded`, else one per trial).

    Everything scored on a draw (:func:`evaluate`, adaptive replay) takes it from here.
    """
    n_models, n_questions, width = test.codes.shape
    # Drawn slots become indices into the flattened arrays: one gather per array.
    cells = np.arange(0, n_models * n_questions * width, width).reshape(n_models, n_questions, 1)
    if all_recorded(test, k):
        yield cells + np.arange(k)
        return
    base = bases(test.models, test.question_ids)
    for trial in range(trials):
        keys = slot_keys(base, seed=seed, trial=trial, width=width)
        yield cells + draw(keys, test.recorded, k)


def _scores(
    test: SampleArrays, codes: IntArray, correct: BoolArray, chosen: Selection
) -> NDArray[np.float64]:
    """One trial's accuracy per method, in :func:`methods_of` order, from the drawn
    ``codes`` and whether each drawn sample is ``correct``: the vectorised scores of the
    registry's offline votes (:mod:`slm_mux.methods.votes`; a test checks they agree)."""
    n_models, n_questions, k = codes.shape
    vote_correct = test.is_correct(chosen.votes)
    pooled, _ = majority(codes.transpose(1, 0, 2).reshape(n_questions, n_models * k))
    by_name = {  # one column per pooled method, one per model for a per-model method
        "slm-mux": [test.is_correct(chosen.code).mean()],
        "agent-forest": [test.is_correct(pooled).mean()],
        "single": correct.mean(axis=(1, 2)),
        "sc": vote_correct.mean(axis=1),
        "oracle": [vote_correct.any(axis=0).mean()],
    }
    return np.concatenate([by_name[spec.name] for spec in offline_methods()])


def _outcomes(test: SampleArrays, chosen: Selection) -> list[Outcome]:
    """SLM-MUX's choice on each question."""
    rows = zip(
        test.question_ids,
        test.answers,
        chosen.model.tolist(),
        chosen.code.tolist(),
        chosen.confidence.tolist(),
        test.is_correct(chosen.code).tolist(),
        strict=True,
    )
    return [
        Outcome(
            question_id=question_id,
            model=test.models[model] if model >= 0 else None,
            answer=answers[code] if code >= 0 else None,
            confidence=confidence,
            correct=correct,
        )
        for question_id, answers, model, code, confidence, correct in rows
    ]
