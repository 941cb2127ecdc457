"""Adaptive SLM-MUX sampling: draw samples in rounds, stop once more would not matter.

Full SLM-MUX asks every model for ``k`` samples. A :class:`Policy` instead
looks at the samples drawn so far and says how many more each model should
draw (:meth:`Policy.next_round`); all zeros means stop, and the answer is
:func:`slm_mux.selection.select` over the samples drawn, with confidence
still counted over ``k``. The same pure function drives live sampling and
offline replay (:func:`replay`).

Policies:

``full``
    One round of ``k`` samples per model: plain SLM-MUX.
``exact``
    Lossless: the decision (winning model and its majority answer, with the
    tie-breaks of :func:`~slm_mux.selection.select`) is always the one full
    sampling would reach on the same sample stream. A model's final top count
    lies between its current top count and that plus its remaining samples; a
    model stops drawing once it can no longer win, and the question stops
    once one model is certain to win and no other answer can overtake its
    majority (ties go to the answer seen first). The first round asks each
    model for ``k // 2 + 1`` samples, the fewest that can decide anything;
    later rounds ask one more sample of each model still in the running.
``first-agree``
    The authors' early exit: one sample per model; stop when every model's
    first answer is the same, else draw the rest of ``k``.
``two-unanimous``
    Two samples per model; stop when at least one model's two samples agree
    and every such unanimous model agrees on the same answer, else draw the
    rest of ``k``.
``agree:T``
    Tunable (``0 < T <= 1``; bare ``agree`` is ``agree:1``): one sample per
    model per round; stop once at least a fraction ``T`` of the models that
    voted hold the current pick as their majority answer, or once ``exact``
    would stop. Models that can no longer win stop drawing, as in ``exact``.
    After the first round, ``agree:1`` stops where ``first-agree`` does when
    every model voted (a model without an answer does not count against it);
    unlike ``first-agree`` it then goes on in ``exact``'s rounds and may stop
    early again. Lower ``T`` stops sooner and risks more.

Codes follow :mod:`slm_mux.selection`: equal answers share a code within a
question and :data:`~slm_mux.selection.NO_VOTE` marks a sample without an
answer. Each model's codes are given in the order they were drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from slm_mux.errors import InputError
from slm_mux.selection import NO_VOTE, Selection, select

PolicyKind = Literal["full", "exact", "first-agree", "two-unanimous", "agree"]

POLICY_NAMES = ("full", "exact", "first-agree", "two-unanimous", "agree:T")
"""What :meth:`Policy.parse` accepts (``T`` a number in ``(0, 1]``)."""


@dataclass(frozen=True)
class _Tally:
    """One model's drawn samples: its leading code and what could still change it."""

    top: int  # count of the leading code (0: no vote yet)
    remaining: int  # samples still to draw to reach k
    locked: bool  # no other code can overtake the leader with the remaining samples


def _tally(codes: Sequence[int], k: int) -> _Tally:
    counts: dict[int, int] = {}
    first: dict[int, int] = {}
    for position, code in enumerate(codes):
        if code != NO_VOTE:
            counts[code] = counts.get(code, 0) + 1
            first.setdefault(code, position)
    remaining = max(k - len(codes), 0)
    if not counts:
        return _Tally(top=0, remaining=remaining, locked=remaining == 0)
    # The leader: most votes, ties to the code seen first.
    leader = min(counts, key=lambda code: (-counts[code], first[code]))
    top = counts[leader]
    # A code seen before the leader overtakes it by drawing level; one seen later
    # (or never yet) must get strictly more.
    overtakable = remaining > top or any(
        count + remaining > top or (count + remaining == top and first[code] < first[leader])
        for code, count in counts.items()
        if code != leader
    )
    return _Tally(top=top, remaining=remaining, locked=not overtakable)


def _beats(low: int, k_low: int, rank_low: int, high: int, k_high: int, rank_high: int) -> bool:
    """Whether confidence ``low / k_low`` beats ``high / k_high`` under select's tie-break."""
    if low == 0:
        return False
    left, right = low * k_high, high * k_low
    return left > right or (left == right and rank_low < rank_high)


def _standing(
    codes: Sequence[Sequence[int]], k: Sequence[int], rank: Sequence[int]
) -> tuple[list[_Tally], list[bool], int | None]:
    """Each model's tally, whether it can still win, and the certain winner (if any)."""
    tallies = [_tally(row, size) for row, size in zip(codes, k, strict=True)]
    lows = [t.top for t in tallies]
    highs = [t.top + t.remaining for t in tallies]
    models = range(len(tallies))
    alive = [
        highs[m] > 0
        and not any(
            _beats(lows[j], k[j], rank[j], highs[m], k[m], rank[m]) for j in models if j != m
        )
        for m in models
    ]
    certain = next(
        (
            w
            for w in models
            if all(
                highs[j] == 0 or _beats(lows[w], k[w], rank[w], highs[j], k[j], rank[j])
                for j in models
                if j != w
            )
        ),
        None,
    )
    return tallies, alive, certain


def exact_done(codes: Sequence[Sequence[int]], k: Sequence[int], rank: Sequence[int]) -> bool:
    """Whether full sampling can no longer change the decision on these samples."""
    tallies, alive, certain = _standing(codes, k, rank)
    if certain is not None:
        return tallies[certain].locked
    return not any(alive[m] and tallies[m].remaining for m in range(len(tallies)))


def _exact_round(
    codes: Sequence[Sequence[int]], k: Sequence[int], rank: Sequence[int]
) -> list[int]:
    tallies, alive, certain = _standing(codes, k, rank)
    if certain is not None:
        locked = tallies[certain].locked
        return [int(m == certain and not locked) for m in range(len(tallies))]
    return [int(alive[m] and tallies[m].remaining > 0) for m in range(len(tallies))]


def _rest(codes: Sequence[Sequence[int]], k: Sequence[int]) -> list[int]:
    return [max(size - len(row), 0) for row, size in zip(codes, k, strict=True)]


def pick(codes: Sequence[Sequence[int]], k: Sequence[int], rank: Sequence[int]) -> Selection:
    """SLM-MUX over the samples drawn so far (undrawn samples count as no vote)."""
    width = max([*k, 1])
    table = np.full((len(codes), width), NO_VOTE, dtype=np.int64)
    for m, row in enumerate(codes):
        table[m, : len(row)] = row
    return select(table, k=list(k), rank=list(rank))


@dataclass(frozen=True)
class Policy:
    """How samples are drawn in rounds; see the module docstring for each kind."""

    kind: PolicyKind
    threshold: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Policy:
        """A policy from its name: ``full``, ``exact``, ``first-agree``, ``two-unanimous``
        or ``agree:T``."""
        name, separator, value = text.strip().partition(":")
        if name == "agree":
            try:
                threshold = float(value) if separator else 1.0
            except ValueError:
                threshold = float("nan")
            if not 0 < threshold <= 1:
                raise InputError(
                    f"adaptive policy {text!r}: agree needs a threshold in (0, 1], e.g. agree:0.75"
                )
            return cls("agree", threshold)
        if name in ("full", "exact", "first-agree", "two-unanimous") and not value:
            return cls(name)  # type: ignore[arg-type]
        raise InputError(
            f"unknown adaptive policy {text!r}; choose one of {', '.join(POLICY_NAMES)}"
        )

    def __str__(self) -> str:
        return f"agree:{self.threshold:g}" if self.kind == "agree" else self.kind

    def next_round(
        self, codes: Sequence[Sequence[int]], k: Sequence[int], rank: Sequence[int]
    ) -> list[int]:
        """How many more samples each model draws next; all zeros: stop.

        ``codes[m]`` are model ``m``'s codes so far in drawing order, ``k[m]``
        the samples it would draw in full, ``rank[m]`` its tie-break rank
        (:func:`~slm_mux.selection.tie_break_rank`). Never asks a model for
        more than ``k[m]`` in all.
        """
        if all(not row for row in codes):
            return [min(size, self._first(size)) for size in k]
        if self.kind == "full":
            return _rest(codes, k)
        if self.kind == "exact":
            return _exact_round(codes, k, rank)
        if self.kind == "agree":
            if exact_done(codes, k, rank) or self._agreed(codes, k, rank):
                return [0] * len(codes)
            return _exact_round(codes, k, rank)
        if self._first_round_agrees(codes):
            return [0] * len(codes)
        return _rest(codes, k)

    def _first(self, k: int) -> int:
        return {"full": k, "exact": k // 2 + 1, "two-unanimous": 2}.get(self.kind, 1)

    def _first_round_agrees(self, codes: Sequence[Sequence[int]]) -> bool:
        """first-agree / two-unanimous: whether the first round settles the question."""
        if self.kind == "first-agree":
            firsts = {row[0] if row else NO_VOTE for row in codes}
            return len(firsts) == 1 and NO_VOTE not in firsts
        unanimous = {row[0] for row in codes if row and row[0] != NO_VOTE and len(set(row)) == 1}
        return len(unanimous) == 1

    def _agreed(
        self, codes: Sequence[Sequence[int]], k: Sequence[int], rank: Sequence[int]
    ) -> bool:
        """agree:T: whether a fraction ``T`` of the voting models hold the current pick."""
        chosen = pick(codes, k, rank)
        voters = [int(v) for v in chosen.votes if v != NO_VOTE]
        if not voters:
            return False
        holding = sum(v == int(chosen.code) for v in voters)
        return holding >= self.threshold * len(voters)


@dataclass(frozen=True)
class Replay:
    """What a policy drew on one question: samples per model, rounds, and the selection."""

    drawn: list[int]
    rounds: int
    selection: Selection


def replay(
    policy: Policy, codes: Sequence[Sequence[int]], k: Sequence[int], rank: Sequence[int]
) -> Replay:
    """Run ``policy`` on a recorded stream: ``codes[m]`` holds model ``m``'s ``k[m]``
    samples in drawing order, of which each round reveals the next ones asked for.

    Raises ``ValueError`` when the policy asks for a sample beyond a model's stream.
    """
    drawn = [0] * len(codes)
    rounds = 0
    while True:
        seen = [row[:n] for row, n in zip(codes, drawn, strict=True)]
        more = policy.next_round(seen, k, rank)
        if not any(more):
            return Replay(drawn=drawn, rounds=rounds, selection=pick(seen, k, rank))
        drawn = [min(n + extra, size) for n, extra, size in zip(drawn, more, k, strict=True)]
        short = next((m for m, row in enumerate(codes) if drawn[m] > len(row)), None)
        if short is not None:
            raise ValueError(
                f"{policy} asks model {short} for sample {len(codes[short]) + 1}, "
                f"beyond the {len(codes[short])} in its stream"
            )
        rounds += 1
