"""Model-selection search: the best subset of models for each subset size.

On the validation split, a subset ``S`` scores
``O(S) = UnionAcc(S) - lam * Contradiction(S)``, from the first ``k`` recorded
samples of each model:

- a model is *correct* on a question when its majority answer is correct;
- it is *consistently wrong* when its ``k`` samples are identical, non-empty
  and wrong;
- ``UnionAcc`` is the fraction of questions some model of ``S`` gets right;
- ``Contradiction`` is the fraction of all questions where a model of ``S`` is
  consistently wrong while another one is correct.

Ties go to the higher union accuracy, then to the lexicographically smallest
sorted tuple of model names. Pools up to ``exact_limit`` models are searched
exhaustively with per-model question bitsets; larger pools by beam search.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slm_mux.analysis.arrays import BoolArray, SampleArrays
from slm_mux.analysis.evaluate import SLM_MUX, evaluate
from slm_mux.errors import InputError
from slm_mux.selection import majority
from slm_mux.tables import markdown_table

Bits = NDArray[np.uint64]

BEAM_WIDTH = 64
"""Subsets kept per size by the beam search for pools above ``exact_limit``."""

_BLOCK_ELEMENTS = 1 << 21
"""Words combined per step of the exhaustive search (bounds its memory)."""


@dataclass(frozen=True)
class SubsetScore:
    """The best subset of one size: its models (sorted names) and scores.

    ``test_accuracy`` is SLM-MUX's test accuracy with these models, once
    :func:`with_test_accuracy` has filled it in.
    """

    models: tuple[str, ...]
    objective: float
    union_accuracy: float
    contradiction: float
    test_accuracy: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "objective": self.objective,
            "union_accuracy": self.union_accuracy,
            "contradiction": self.contradiction,
            "test_accuracy": self.test_accuracy,
        }


@dataclass(frozen=True)
class SearchResult:
    """Best subset per size (``best[size]``); ``exact`` is ``False`` for a beam search."""

    best: dict[int, SubsetScore]
    exact: bool
    lam: float
    k: int

    def to_json(self) -> dict[str, Any]:
        return {
            "best": {str(size): score.to_json() for size, score in sorted(self.best.items())},
            "exact": self.exact,
            "lambda": self.lam,
            "k": self.k,
        }

    def to_markdown(self) -> str:
        """The best subset per size as a Markdown table."""
        kind = "exact" if self.exact else "approximate (beam)"
        table = markdown_table(
            ("size", "models", "objective", "union acc.", "contradiction", "test acc. (SLM-MUX)"),
            [
                (
                    str(size),
                    ", ".join(score.models),
                    f"{score.objective:.4f}",
                    f"{score.union_accuracy:.4f}",
                    f"{score.contradiction:.4f}",
                    "-" if score.test_accuracy is None else f"{score.test_accuracy:.4f}",
                )
                for size, score in sorted(self.best.items())
            ],
            ("right", "left", "right", "right", "right", "right"),
        )
        return (
            f"Best subsets on validation, k={self.k}, lambda={self.lam:g}, {kind} search\n\n{table}"
        )


def model_outcomes(validation: SampleArrays, k: int) -> tuple[BoolArray, BoolArray]:
    """Per model and question (``[models, questions]``): majority correct; consistently wrong."""
    validation.require_samples(k)
    votes, counts = majority(validation.codes[:, :, :k])
    correct = validation.is_correct(votes)
    return correct, (counts == k) & ~correct


def search(
    validation: SampleArrays,
    *,
    k: int,
    max_models: int,
    lam: float = 1.0,
    exact_limit: int = 22,
) -> SearchResult:
    """The subset maximizing the objective for each size ``1 .. min(max_models, models)``."""
    if max_models < 1:
        raise InputError(f"max_models must be at least 1, got {max_models}")
    correct, wrong = model_outcomes(validation, k)
    # Bit j of a subset mask stands for the j-th model from the end of the
    # sorted names, so among equal scores the largest mask is the
    # lexicographically smallest sorted tuple of names.
    by_bit = sorted(range(len(validation.models)), key=validation.models.__getitem__)[::-1]
    names = [validation.models[m] for m in by_bit]
    correct_bits, wrong_bits = _pack(correct[by_bit]), _pack(wrong[by_bit])
    largest = min(max_models, len(names))
    exact = len(names) <= exact_limit
    if exact:
        found = _exhaustive(correct_bits, wrong_bits, lam, largest)
    else:
        found = _beam(correct_bits, wrong_bits, lam, largest, BEAM_WIDTH)
    questions = len(validation.question_ids)
    best = {
        size: SubsetScore(
            models=tuple(sorted(names[j] for j in range(len(names)) if mask >> j & 1)),
            objective=(union - lam * contradiction) / questions,
            union_accuracy=union / questions,
            contradiction=contradiction / questions,
        )
        for size, (mask, union, contradiction) in found.items()
    }
    return SearchResult(best=best, exact=exact, lam=lam, k=k)


def with_test_accuracy(
    result: SearchResult,
    test: SampleArrays,
    *,
    k: int,
    trials: int,
    seed: int,
    validation_accuracy: Mapping[str, float] | None,
) -> SearchResult:
    """``result`` with each subset's SLM-MUX accuracy on ``test`` (see :func:`evaluate`)."""
    best = {
        size: replace(
            score,
            test_accuracy=evaluate(
                test.subset(score.models),
                k=k,
                trials=trials,
                seed=seed,
                validation_accuracy=validation_accuracy,
            )
            .methods[SLM_MUX]
            .accuracy,
        )
        for size, score in result.best.items()
    }
    return replace(result, best=best)


def _pack(flags: BoolArray) -> Bits:
    """Rows of question flags as bitsets of 64-bit words."""
    packed = np.packbits(flags, axis=1)
    padding = -packed.shape[1] % 8
    padded = np.pad(packed, ((0, 0), (0, padding)))
    return np.ascontiguousarray(padded).view(np.uint64)


def _or_table(bits: Bits) -> Bits:
    """The union of the rows of ``bits`` for every subset mask of them."""
    table = np.zeros((1 << len(bits), bits.shape[1]), dtype=np.uint64)
    for j, row in enumerate(bits):
        table[1 << j : 2 << j] = table[: 1 << j] | row
    return table


def _popcount(bits: Bits) -> NDArray[np.int64]:
    """Set bits per bitset (summed over the last axis)."""
    counts: NDArray[np.int64] = np.bitwise_count(bits).sum(axis=-1, dtype=np.int64)
    return counts


Found = dict[int, tuple[int, int, int]]
"""Per subset size: the best mask, its union count and its contradiction count."""


def _exhaustive(correct: Bits, wrong: Bits, lam: float, largest: int) -> Found:
    """Best subset per size over every subset, splitting the pool into two halves."""
    n_models, words = correct.shape
    low_size = n_models // 2
    low_correct, low_wrong = _or_table(correct[:low_size]), _or_table(wrong[:low_size])
    high_correct, high_wrong = _or_table(correct[low_size:]), _or_table(wrong[low_size:])
    n_low = len(low_correct)
    union = np.empty(1 << n_models, dtype=np.int64)
    contradiction = np.empty(1 << n_models, dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // (n_low * words))
    for start in range(0, len(high_correct), block):
        stop = min(start + block, len(high_correct))
        either = high_correct[start:stop, None] | low_correct[None]
        against = (high_wrong[start:stop, None] | low_wrong[None]) & either
        # mask = high << low_size | low, so rows of (high, low) are consecutive masks.
        union[start * n_low : stop * n_low] = _popcount(either).ravel()
        contradiction[start * n_low : stop * n_low] = _popcount(against).ravel()
    masks = np.arange(1 << n_models, dtype=np.int64)
    sizes = np.bitwise_count(masks).astype(np.int64)
    objective = union - lam * contradiction
    keep = (sizes >= 1) & (sizes <= largest)
    masks, sizes, objective = masks[keep], sizes[keep], objective[keep]
    union, contradiction = union[keep], contradiction[keep]
    best_objective = np.full(largest + 1, -np.inf)
    np.maximum.at(best_objective, sizes, objective)
    tied = objective == best_objective[sizes]
    best_union = np.full(largest + 1, -1, dtype=np.int64)
    np.maximum.at(best_union, sizes[tied], union[tied])
    tied &= union == best_union[sizes]
    best_mask = np.full(largest + 1, -1, dtype=np.int64)
    np.maximum.at(best_mask, sizes[tied], masks[tied])
    found: Found = {}
    for size in range(1, largest + 1):
        mask = int(best_mask[size])
        index = int(np.searchsorted(masks, mask))
        found[size] = (mask, int(union[index]), int(contradiction[index]))
    return found


def _beam(correct: Bits, wrong: Bits, lam: float, largest: int, width: int) -> Found:
    """Best subset per size found by growing the ``width`` best subsets one model at a time."""
    n_models, words = correct.shape
    beam_masks = [0]
    beam_correct = np.zeros((1, words), dtype=np.uint64)
    beam_wrong = np.zeros((1, words), dtype=np.uint64)
    found: Found = {}
    for size in range(1, largest + 1):
        either = beam_correct[:, None] | correct[None]
        against = (beam_wrong[:, None] | wrong[None]) & either
        union, contradiction = _popcount(either), _popcount(against)
        candidates: dict[int, tuple[float, int, int, int]] = {}
        for b, mask in enumerate(beam_masks):
            for j in range(n_models):
                grown = mask | 1 << j
                if grown != mask and grown not in candidates:
                    score = float(union[b, j] - lam * contradiction[b, j])
                    candidates[grown] = (score, int(union[b, j]), b, j)
        # Larger mask first among equal scores: the smaller sorted tuple of names.
        ranked = sorted(
            candidates, key=lambda m: (candidates[m][0], candidates[m][1], m), reverse=True
        )[:width]
        parents = [candidates[m][2:] for m in ranked]
        beam_masks = ranked
        beam_correct = np.stack([beam_correct[b] | correct[j] for b, j in parents])
        beam_wrong = np.stack([beam_wrong[b] | wrong[j] for b, j in parents])
        top = candidates[ranked[0]]
        found[size] = (ranked[0], top[1], int(contradiction[top[2], top[3]]))
    return found
