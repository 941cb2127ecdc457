"""Offline evaluation: replay SLM-MUX and baselines on stored test samples.

Each trial draws ``k`` of the recorded samples per model and question (without
replacement, kept in recorded order) and scores every method on the draw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slm_mux.analysis.arrays import BoolArray, IntArray, SampleArrays
from slm_mux.errors import InputError
from slm_mux.selection import Selection, majority, select, tie_break_rank


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
    replaces the trials. Methods: ``slm-mux``, ``agent-forest``,
    ``single:<model>``, ``sc:<model>`` and ``oracle``. ``model_share`` is how
    often SLM-MUX took each model's answer (fraction of questions, averaged
    over passes), ``no_answer_share`` how often no model voted;
    ``first_trial`` has SLM-MUX's choice per question in the first pass.
    """

    questions: int
    k: int
    trials: int
    seed: int
    all_recorded: bool
    methods: dict[str, Score]
    model_share: dict[str, float]
    no_answer_share: float
    first_trial: list[Outcome]

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
            "methods": {name: score.to_json() for name, score in self.methods.items()},
            "attribution": {
                "share": dict(self.model_share),
                "no_answer": self.no_answer_share,
                "first_trial": [outcome.to_json() for outcome in self.first_trial],
            },
        }

    def to_markdown(self) -> str:
        """Accuracy per method, and where SLM-MUX's answers came from, as Markdown."""
        lines = [
            f"{self.questions} test questions, k={self.k}, {self.draws_summary}",
            "",
            "| method | accuracy | std |",
            "|---|---:|---:|",
            *(
                f"| {name} | {score.accuracy:.4f} | {score.std:.4f} |"
                for name, score in self.methods.items()
            ),
            "",
            "| SLM-MUX answer from | share |",
            "|---|---:|",
            *(f"| {name} | {share:.4f} |" for name, share in self.model_share.items()),
            f"| (no answer) | {self.no_answer_share:.4f} |",
        ]
        return "\n".join(lines) + "\n"


def method_names(models: list[str]) -> list[str]:
    """Names of the evaluated methods, in report order."""
    return [
        "slm-mux",
        "agent-forest",
        *(f"single:{name}" for name in models),
        *(f"sc:{name}" for name in models),
        "oracle",
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
    replacement from the recorded ones (one ``numpy.random.default_rng(seed)``
    for the whole run); when every model has exactly ``k`` samples of every
    question, all trials are the recorded samples in recorded order and std is
    0. Std is the population standard deviation (ddof=0) across trials.
    ``validation_accuracy`` (from the validation split only) breaks SLM-MUX
    confidence ties; ``None`` keeps the models' given order.
    """
    if trials < 1:
        raise InputError(f"trials must be at least 1, got {trials}")
    test.require_samples(k)
    accuracy = validation_accuracy or {}
    rank = tie_break_rank([accuracy.get(name) for name in test.models])
    n_models, n_questions, width = test.codes.shape
    fixed = bool((test.recorded == k).all())
    runs = 1 if fixed else trials
    unrecorded = np.arange(width) >= test.recorded[..., None]
    rng = np.random.default_rng(seed)
    scores = np.empty((runs, 2 * n_models + 3))
    share = np.zeros(n_models + 1)
    first_trial: list[Outcome] = []
    for trial in range(runs):
        if fixed:
            drawn = np.broadcast_to(np.arange(k), (n_models, n_questions, k))
        else:
            drawn = _draw(rng, unrecorded, k)
        codes = np.take_along_axis(test.codes, drawn, axis=2)
        chosen = select(codes, k=k, rank=rank)
        scores[trial] = _scores(test, codes, drawn, chosen)
        share += np.bincount(chosen.model + 1, minlength=n_models + 1) / n_questions
        if trial == 0:
            first_trial = _outcomes(test, chosen)
    names = method_names(test.models)
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


def _draw(rng: np.random.Generator, unrecorded: BoolArray, k: int) -> IntArray:
    """Indices of ``k`` recorded samples per (model, question), uniformly drawn, sorted."""
    keys = rng.random(unrecorded.shape)
    np.putmask(keys, unrecorded, 2.0)  # above every key in [0, 1): never drawn
    drawn = np.argpartition(keys, k - 1, axis=-1)[..., :k]
    return np.sort(drawn, axis=-1)


def _scores(
    test: SampleArrays, codes: IntArray, drawn: IntArray, chosen: Selection
) -> NDArray[np.float64]:
    """One trial's accuracy per method, in :func:`method_names` order."""
    n_models, n_questions, k = codes.shape
    vote_correct = test.is_correct(chosen.votes)
    pooled, _ = majority(codes.transpose(1, 0, 2).reshape(n_questions, n_models * k))
    single = np.take_along_axis(test.sample_correct, drawn, axis=2).mean(axis=(1, 2))
    return np.concatenate(
        [
            [test.is_correct(chosen.code).mean(), test.is_correct(pooled).mean()],
            single,
            vote_correct.mean(axis=1),
            [vote_correct.any(axis=0).mean()],
        ]
    )


def _outcomes(test: SampleArrays, chosen: Selection) -> list[Outcome]:
    """SLM-MUX's choice on each question."""
    correct = test.is_correct(chosen.code)
    outcomes = []
    for q, question_id in enumerate(test.question_ids):
        model, code = int(chosen.model[q]), int(chosen.code[q])
        outcomes.append(
            Outcome(
                question_id=question_id,
                model=test.models[model] if model >= 0 else None,
                answer=test.answers[q][code] if code >= 0 else None,
                confidence=float(chosen.confidence[q]),
                correct=bool(correct[q]),
            )
        )
    return outcomes
