"""SLM-MUX selection (Algorithm 1 of arXiv 2510.05077), as pure functions.

Everything that picks a final answer — the live engine, the offline
evaluation, the model-selection search — goes through :func:`select`.

Answers are given as integer *codes*: samples whose answers are equivalent
under the task's grader share a code, and :data:`NO_VOTE` marks an empty or
unparseable sample. Codes must be small non-negative integers per question
(``0 .. distinct-1``), which is what :func:`encode` produces.

The rule:

1. per model, the vote is its most frequent code among its samples (ties go to
   the code that occurs first); its confidence is that code's count divided
   by ``k``, the number of samples *asked for* — a sample with no answer is no
   vote but still counts in ``k``;
2. across models the highest confidence wins; ties go to the better tie-break
   rank (validation accuracy, then the order the models were given);
3. a model with no vote never wins; with no vote at all there is no answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from slm_mux.errors import InputError

NO_VOTE = -1
"""Code of a sample that has no answer (empty or unparseable)."""

IntArray = NDArray[np.int64]


def majority(codes: ArrayLike) -> tuple[IntArray, IntArray]:
    """Most frequent code along the last axis, and how often it occurs.

    Ties go to the code that occurs first. Rows with no vote give
    ``(NO_VOTE, 0)``. Works on any leading shape.
    """
    arr = np.asarray(codes, dtype=np.int64)
    lead, n = arr.shape[:-1], arr.shape[-1]
    top = int(arr.max()) if arr.size else NO_VOTE
    if top < 0:
        return np.full(lead, NO_VOTE, dtype=np.int64), np.zeros(lead, dtype=np.int64)
    flat = arr.reshape(-1, n)
    rows = flat.shape[0]
    # One bin per (row, code) and one per row for no vote, emptied before counts are read.
    width = top + 2
    bins = np.where(flat >= 0, flat, top + 1)
    bins += np.arange(0, rows * width, width)[:, None]
    counts = np.bincount(bins.ravel(), minlength=rows * width)
    counts[top + 1 :: width] = 0
    count_at = counts[bins]
    first = count_at.argmax(axis=1)  # argmax returns the first maximum: the earliest sample
    index = np.arange(rows)
    count = count_at[index, first]
    code = np.where(count > 0, flat[index, first], NO_VOTE)
    return code.reshape(lead), count.reshape(lead)


def tie_break_rank(validation_accuracy: Sequence[float | None]) -> IntArray:
    """Rank of each model for breaking confidence ties (0 is preferred).

    Higher validation accuracy ranks first; unknown accuracy ranks after every
    known one; equal accuracies keep the order the models were given.
    """
    keys = [
        (0 if acc is not None else 1, -(acc or 0.0), position)
        for position, acc in enumerate(validation_accuracy)
    ]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys))
    return rank


@dataclass(frozen=True)
class Selection:
    """What :func:`select` decided, per question (arrays over the leading shape).

    ``model`` is the winning model's index (``-1`` when no model voted),
    ``code`` its answer code, ``confidence`` its vote count over ``k``, and
    ``votes``/``counts`` every model's own majority code and count, with the
    model axis first.
    """

    model: IntArray
    code: IntArray
    confidence: NDArray[np.float64]
    votes: IntArray
    counts: IntArray


def select(
    codes: ArrayLike, *, k: int | ArrayLike | None = None, rank: ArrayLike | None = None
) -> Selection:
    """Apply SLM-MUX to ``codes`` of shape ``[models, ..., samples]``.

    ``k`` is the number of samples asked for, one number or one per model
    (default: the last axis length); ``rank`` is the tie-break rank per model
    from :func:`tie_break_rank` (default: the given order).
    """
    arr = np.asarray(codes, dtype=np.int64)
    n_models = arr.shape[0]
    votes, counts = majority(arr)
    column = (n_models,) + (1,) * (counts.ndim - 1)
    asked = np.broadcast_to(np.asarray(arr.shape[-1] if k is None else k), (n_models,))
    if (asked <= 0).any():
        raise ValueError("k must be positive")
    ranks = np.arange(n_models) if rank is None else np.asarray(rank, dtype=np.int64)
    # Equal fractions divide to the same float, so confidence ties are exact.
    confidence = counts / asked.reshape(column)
    best = confidence.max(axis=0)
    preference = np.where(confidence == best, (n_models - 1 - ranks).reshape(column), -1)
    winner = preference.argmax(axis=0)
    count = np.take_along_axis(counts, winner[None], axis=0)[0]
    code = np.take_along_axis(votes, winner[None], axis=0)[0]
    has_vote = count > 0
    return Selection(
        model=np.where(has_vote, winner, -1),
        code=np.where(has_vote, code, NO_VOTE),
        confidence=np.where(has_vote, best, 0.0),
        votes=votes,
        counts=counts,
    )


Classifier = Callable[[Sequence[str]], Sequence[int]]
"""Maps distinct answer strings to equivalence-class ids (a task's ``cluster``)."""


def encode(
    answers: Sequence[Sequence[str | None]], classify: Classifier
) -> tuple[IntArray, list[str]]:
    """Turn per-model answer lists into codes for :func:`select`.

    Returns the code array ``[models, samples]`` (ragged lists are padded with
    :data:`NO_VOTE`) and, per code, the first answer string seen in that class.
    """
    distinct: list[str] = []
    seen: dict[str, int] = {}
    for row in answers:
        for answer in row:
            if answer is not None and answer.strip() and answer not in seen:
                seen[answer] = len(distinct)
                distinct.append(answer)
    classes = list(classify(distinct)) if distinct else []
    # Renumber classes by first appearance so codes stay compact.
    renumber: dict[int, int] = {}
    representative: list[str] = []
    for answer, cls in zip(distinct, classes, strict=True):
        if cls not in renumber:
            renumber[cls] = len(representative)
            representative.append(answer)
    width = max((len(row) for row in answers), default=0)
    codes = np.full((len(answers), width), NO_VOTE, dtype=np.int64)
    for m, row in enumerate(answers):
        for s, answer in enumerate(row):
            if answer is not None and answer in seen:
                codes[m, s] = renumber[classes[seen[answer]]]
    return codes, representative


@dataclass(frozen=True)
class Decision:
    """The outcome of SLM-MUX on one question.

    ``votes`` maps each model to its answers' counts (one entry per
    equivalence class, keyed by the class's first answer string).
    """

    answer: str | None
    model: str | None
    confidence: float
    votes: dict[str, dict[str, int]]


def decide(
    answers: Mapping[str, Sequence[str | None]],
    classify: Classifier,
    *,
    k: int | Mapping[str, int] | None = None,
    validation_accuracy: Mapping[str, float] | None = None,
) -> Decision:
    """SLM-MUX over named models' sampled answers for one question.

    ``k`` is the number of samples asked for, one number or one per model; it
    defaults to the longest answer list. Ties in confidence go to the
    model with the higher ``validation_accuracy``, then to mapping order.
    """
    names = list(answers)
    if not names:
        raise InputError("decide needs the answers of at least one model")
    if isinstance(k, Mapping) and set(names) - set(k):
        missing = sorted(set(names) - set(k))[0]
        raise InputError(f"no k given for model {missing!r}")
    rows = [list(answers[name]) for name in names]
    codes, representative = encode(rows, classify)
    if isinstance(k, Mapping):
        asked: int | list[int] = [k[name] for name in names]
    else:
        asked = k if k is not None else max(codes.shape[1], 1)
    accuracy = validation_accuracy or {}
    ranks = tie_break_rank([accuracy.get(name) for name in names])
    if codes.shape[1] == 0:
        codes = np.full((len(names), 1), NO_VOTE, dtype=np.int64)
    chosen = select(codes, k=asked, rank=ranks)
    votes: dict[str, dict[str, int]] = {}
    for m, name in enumerate(names):
        tally: dict[str, int] = {}
        for code in codes[m]:
            if code != NO_VOTE:
                key = representative[int(code)]
                tally[key] = tally.get(key, 0) + 1
        votes[name] = tally
    winner = int(chosen.model)
    if winner < 0:
        return Decision(answer=None, model=None, confidence=0.0, votes=votes)
    code = int(chosen.code)
    # Report the winning model's own first answer string in the winning class.
    own = next(a for a, c in zip(rows[winner], codes[winner], strict=False) if c == code)
    return Decision(
        answer=own, model=names[winner], confidence=float(chosen.confidence), votes=votes
    )
