"""Offline replay of adaptive SLM-MUX sampling policies on recorded samples.

Each policy (:class:`slm_mux.adaptive.Policy`) is replayed per question on
the very draws :func:`~slm_mux.analysis.evaluate.evaluate` scores: the ``k``
drawn samples of each model, in recorded order, are the stream the policy
draws from, and :func:`slm_mux.adaptive.replay` (the one implementation of
the rule, shared with live sampling) decides. A store that holds fewer than
``k`` samples of some model and question (collected adaptively) is replayed
once on the recorded samples in recorded order instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slm_mux.adaptive import Policy, replay
from slm_mux.analysis.arrays import IntArray, SampleArrays
from slm_mux.analysis.evaluate import drawn_indices
from slm_mux.errors import InputError, StoreError
from slm_mux.selection import NO_VOTE, select, tie_break_rank
from slm_mux.tables import markdown_table

FloatArray = NDArray[np.float64]

REPORTED_POLICIES = tuple(
    Policy.parse(name) for name in ("exact", "first-agree", "two-unanimous", "agree:1", "agree:0.6")
)
"""The policies ``slm-mux report`` replays unless told otherwise (``bench/bench_adaptive.py``:
``agree:1`` never lost more than 0.5 points on the demo's pools, ``agree:0.6`` saves more)."""


@dataclass(frozen=True)
class PolicyScore:
    """A replayed policy's accuracy (mean and population std over passes) and cost.

    ``samples_fraction`` is the samples drawn over ``models x k`` (mean over
    questions and passes), ``rounds`` the mean rounds per question and
    ``same_decision`` the fraction of (question, pass) on which the policy
    chose the model and answer full SLM-MUX chose on the same draw (``None``
    when the store lacks the samples full SLM-MUX needs). ``tokens_fraction``
    weighs samples by their completion tokens (``None`` unless every drawn
    sample's count is known).
    """

    accuracy: float
    std: float
    samples_fraction: float
    rounds: float
    same_decision: float | None
    tokens_fraction: float | None = None

    def to_json(self) -> dict[str, float | None]:
        """The score; ``tokens_fraction`` only when known."""
        score = {
            "accuracy": self.accuracy,
            "std": self.std,
            "samples_fraction": self.samples_fraction,
            "rounds": self.rounds,
            "same_decision": self.same_decision,
        }
        if self.tokens_fraction is not None:
            score["tokens_fraction"] = self.tokens_fraction
        return score


@dataclass(frozen=True)
class Replayed:
    """Every policy's :class:`PolicyScore` on ``questions`` test questions at ``k``.

    ``recorded_order`` says the store had fewer than ``k`` samples of some model
    and question: one pass replayed the recorded samples as they were drawn.
    """

    questions: int
    k: int
    passes: int
    recorded_order: bool
    policies: dict[Policy, PolicyScore]

    def methods_json(self) -> dict[str, dict[str, float | None]]:
        """``{"slm-mux@<policy>": {...}}``, the methods ``--json`` adds."""
        return {method_name(policy): score.to_json() for policy, score in self.policies.items()}

    def to_json(self) -> dict[str, Any]:
        """The whole replay, for a store without the samples plain evaluation needs."""
        return {
            "questions": self.questions,
            "k": self.k,
            "passes": self.passes,
            "recorded_order": self.recorded_order,
            "methods": self.methods_json(),
        }

    def to_markdown(self) -> str:
        """One row per policy: accuracy, std, samples fraction, rounds, same decision."""
        table = markdown_table(
            ("policy", "accuracy", "std", "samples", "tokens", "rounds", "same decision as full"),
            [
                (
                    method_name(policy),
                    f"{s.accuracy:.4f}",
                    f"{s.std:.4f}",
                    f"{s.samples_fraction:.4f}",
                    "-" if s.tokens_fraction is None else f"{s.tokens_fraction:.4f}",
                    f"{s.rounds:.2f}",
                    "-" if s.same_decision is None else f"{s.same_decision:.4f}",
                )
                for policy, s in self.policies.items()
            ],
            ("left", "right", "right", "right", "right", "right", "right"),
        )
        how = (
            "1 pass over the recorded samples in recorded order"
            if self.recorded_order
            else f"{self.passes} pass{'' if self.passes == 1 else 'es'}, the same draws as above"
        )
        return (
            f"Adaptive sampling replayed: {self.questions} test questions, k={self.k}, {how}; "
            "samples (tokens) = fraction of the models x k samples (their completion tokens) "
            "drawn.\n\n" + table
        )


def method_name(policy: Policy) -> str:
    """The method name of a replayed policy: ``slm-mux@<policy>``."""
    return f"slm-mux@{policy}"


def replay_policies(
    test: SampleArrays,
    policies: Sequence[Policy],
    *,
    k: int,
    trials: int,
    seed: int,
    validation_accuracy: Mapping[str, float] | None = None,
    tokens: FloatArray | None = None,
) -> Replayed:
    """Replay each of ``policies`` on ``test`` at ``k`` samples per model.

    With at least ``k`` samples of every model and question, the policies run
    on each pass of :func:`~slm_mux.analysis.evaluate.drawn_indices` (the
    draws plain evaluation scores) and are compared with full SLM-MUX on it.
    Otherwise one pass replays the recorded samples in recorded order and
    raises :class:`StoreError` when a policy needs a sample that was not
    recorded. Confidence ties break as in evaluation (validation accuracy,
    then model names). ``tokens[m, q, s]``, each recorded sample's completion
    tokens (NaN: unknown) laid out as ``test.codes``, gives the tokens fraction.
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if trials < 1:
        raise InputError(f"trials must be at least 1, got {trials}")
    if test.models != sorted(test.models):
        test = test.subset(test.models)  # the canonical order
    accuracy = validation_accuracy or {}
    rank = tie_break_rank([accuracy.get(name) for name in test.models]).tolist()
    n_models, n_questions, _ = test.codes.shape
    recorded_order = bool((test.recorded < k).any())
    passes: list[_Pass] = []
    if recorded_order:
        # Unrecorded slots are read as no vote; a replay that reveals one is refused below.
        stream = np.where(test.codes[:, :, :k] >= 0, test.codes[:, :, :k], NO_VOTE)
        passes.append(_Pass(stream.transpose(1, 0, 2).tolist(), None, None))
    else:
        flat = test.codes.ravel()
        for index in drawn_indices(test, k=k, trials=trials, seed=seed):
            codes = flat[index]
            full = select(codes, k=k, rank=rank)
            decided = np.stack([full.model, full.code], axis=1)
            drawn_tokens = None if tokens is None else tokens.ravel()[index]
            passes.append(_Pass(codes.transpose(1, 0, 2).tolist(), decided, drawn_tokens))
    scores = {}
    for policy in policies:
        run = _Replayer(policy, [k] * n_models, rank)
        accuracy_per_pass, rounds, same = [], 0, 0
        drawn = np.zeros((len(passes), n_questions, n_models), dtype=np.int64)
        for p, replayed in enumerate(passes):
            chosen = np.empty((n_questions, 2), dtype=np.int64)
            for q, row in enumerate(replayed.rows):
                counts, played_rounds, model, code = run(row)
                if recorded_order:
                    _check_recorded(test, policy, k, q, counts)
                chosen[q] = model, code
                drawn[p, q] = counts
                rounds += played_rounds
            if replayed.full is not None:
                same += int((chosen == replayed.full).all(axis=1).sum())
            accuracy_per_pass.append(float(test.is_correct(chosen[:, 1]).mean()))
        decisions = len(passes) * n_questions
        scores[policy] = PolicyScore(
            accuracy=float(np.mean(accuracy_per_pass)),
            std=float(np.std(accuracy_per_pass)),
            samples_fraction=int(drawn.sum()) / (decisions * n_models * k),
            rounds=rounds / decisions,
            same_decision=None if recorded_order else same / decisions,
            tokens_fraction=_tokens_fraction(passes, drawn),
        )
    return Replayed(
        questions=n_questions,
        k=k,
        passes=len(passes),
        recorded_order=recorded_order,
        policies=scores,
    )


@dataclass(frozen=True)
class _Pass:
    """One pass: per question, each model's stream of ``k`` codes; full SLM-MUX's
    (model, code) per question; the streams' completion tokens ``[models, questions, k]``."""

    rows: list[list[list[int]]]
    full: IntArray | None
    tokens: FloatArray | None


def _tokens_fraction(passes: Sequence[_Pass], drawn: IntArray) -> float | None:
    """Tokens of the samples drawn (``drawn[pass, question, model]`` first ones of each
    stream) over the tokens of every stream; ``None`` when some count is unknown."""
    used = whole = 0.0
    for replayed, counts in zip(passes, drawn, strict=True):
        if replayed.tokens is None or np.isnan(replayed.tokens).any():
            return None
        cumulative = np.concatenate(
            [np.zeros((*replayed.tokens.shape[:2], 1)), replayed.tokens.cumsum(axis=2)], axis=2
        )
        used += float(np.take_along_axis(cumulative, counts.T[:, :, None], axis=2).sum())
        whole += float(replayed.tokens.sum())
    return used / whole if whole else None


def _check_recorded(
    test: SampleArrays,
    policy: Policy,
    k: int,
    q: int,
    drawn: Sequence[int],
) -> None:
    """Raise when the policy drew past the samples recorded of question ``q``."""
    for m, count in enumerate(drawn):
        recorded = int(test.recorded[m, q])
        if count > recorded:
            raise StoreError(
                f"replaying {policy} at k={k} needs sample {recorded} (counting from 0) of "
                f"model {test.models[m]!r} on question {test.question_ids[q]!r}, but only "
                f"{recorded} are recorded; collect them (slm-mux collect --adaptive {policy} "
                "resumes), replay the policy the store was collected with, or give a smaller --k"
            )


Key = tuple[tuple[int, ...], ...]


class _Replayer:
    """:func:`slm_mux.adaptive.replay` of one policy, ``k`` and ranks, remembered per table.

    The rule looks only at which samples agree, never at the codes' values, so
    tables are renumbered by first appearance before they are looked up: every
    question where all models answer alike shares one entry, whatever the answer.
    """

    def __init__(self, policy: Policy, k: list[int], rank: list[int]) -> None:
        self._policy, self._k, self._rank = policy, k, rank
        self._seen: dict[Key, tuple[list[int], int, int, int]] = {}

    def __call__(self, rows: Sequence[Sequence[int]]) -> tuple[list[int], int, int, int]:
        """Samples drawn per model, rounds, winning model and its code (in ``rows``' numbering)."""
        labels: dict[int, int] = {}
        key = tuple(
            tuple(code if code < 0 else labels.setdefault(code, len(labels)) for code in row)
            for row in rows
        )
        known = self._seen.get(key)
        if known is None:
            played = replay(self._policy, key, self._k, self._rank)
            known = (
                played.drawn,
                played.rounds,
                int(played.selection.model),
                int(played.selection.code),
            )
            self._seen[key] = known
        drawn, rounds, model, code = known
        return drawn, rounds, model, list(labels)[code] if code >= 0 else code
