"""The adaptive-sampling rule (:mod:`slm_mux.adaptive`): lossless replay and the approximate
policies, on seeded random sample tables and hand-made cases."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import pairwise

import numpy as np
import pytest

from slm_mux.adaptive import Policy, exact_done, pick, replay
from slm_mux.errors import InputError
from slm_mux.selection import NO_VOTE, select

N = NO_VOTE
Table = tuple[list[list[int]], list[int], list[int]]
"""Per-model codes in drawing order (``k[m]`` each), ``k`` and tie-break ranks."""


def random_tables(seed: int, count: int) -> Iterator[Table]:
    """Tables of 1-5 models, per-model k 1-9, codes from a few answers and no-votes.

    Each model leans to an answer of its own and the models often share one, so
    confidence ties, agreement and near-misses are frequent.
    """
    rng = np.random.default_rng(seed)
    for _ in range(count):
        models = int(rng.integers(1, 6))
        answers = int(rng.integers(1, 4))
        common = int(rng.integers(answers))
        ks = [int(k) for k in rng.integers(1, 10, size=models)]
        codes = []
        for k in ks:
            favourite = common if rng.random() < 0.6 else int(rng.integers(answers))
            lean = rng.uniform(0.2, 1.0)
            row = np.where(rng.random(k) < lean, favourite, rng.integers(answers, size=k))
            row = np.where(rng.random(k) < 0.15, N, row)
            codes.append([int(c) for c in row])
        ranks = [int(r) for r in rng.permutation(models)]
        yield codes, ks, ranks


def full_decision(codes: Sequence[Sequence[int]], k: Sequence[int], rank: Sequence[int]) -> Pair:
    """SLM-MUX on the whole table: (winning model, its answer code)."""
    chosen = pick(codes, k, rank)
    return int(chosen.model), int(chosen.code)


Pair = tuple[int, int]


def decision(policy: Policy, table: Table) -> tuple[Pair, list[int], int]:
    played = replay(policy, *table)
    return (int(played.selection.model), int(played.selection.code)), played.drawn, played.rounds


EXACT = Policy.parse("exact")


def test_exact_replay_decides_as_full_sampling_on_every_random_table() -> None:
    saved = tables = 0
    for table in random_tables(seed=10, count=6000):
        codes, ks, ranks = table
        width = max(ks)
        padded = np.full((len(codes), width), N, dtype=np.int64)
        for m, row in enumerate(codes):
            padded[m, : len(row)] = row
        expected = select(padded, k=ks, rank=ranks)
        got, drawn, _ = decision(EXACT, table)
        assert got == (int(expected.model), int(expected.code)), table
        assert all(0 <= n <= k for n, k in zip(drawn, ks, strict=True)), table
        assert exact_done([row[:n] for row, n in zip(codes, drawn, strict=True)], ks, ranks)
        saved += sum(ks) - sum(drawn)
        tables += 1
    # The tables are varied enough that the rule really stops early, often.
    assert saved > tables


def test_full_draws_everything_in_one_round() -> None:
    for table in random_tables(seed=11, count=500):
        got, drawn, rounds = decision(Policy.parse("full"), table)
        assert (got, drawn, rounds) == (full_decision(*table), table[1], 1)


def test_replay_ignores_how_answers_are_numbered() -> None:
    """Only which samples agree matters: renaming the codes renames the answer, nothing else."""
    rng = np.random.default_rng(12)
    for table in random_tables(seed=12, count=500):
        codes, ks, ranks = table
        rename = {int(c): int(r) for c, r in enumerate(rng.permutation(3) + 5)} | {N: N}
        renamed = ([[rename[c] for c in row] for row in codes], ks, ranks)
        for policy in map(Policy.parse, ("exact", "two-unanimous", "agree:0.5")):
            (model, code), drawn, rounds = decision(policy, table)
            assert decision(policy, renamed) == ((model, rename[code]), drawn, rounds)


# --- exact, case by case ---------------------------------------------------


@pytest.mark.parametrize(
    ("row", "drawn"),
    [
        # After A B A, B can only draw level with A and A came first: A is locked.
        ([0, 1, 0, 1], 3),
        # After B A A, B drawing level would win the tie (seen first): draw the last one.
        ([1, 0, 0, 1], 4),
        ([0, 0, 0, 0, 1], 3),  # three of five: nothing can overtake
        ([0, 1, 2, 1, 1], 5),  # after A B C B, A drawing level with B would win the tie
        ([N, N, N], 3),
    ],
)
def test_a_single_model_stops_once_its_majority_is_locked(row: list[int], drawn: int) -> None:
    k = len(row)
    got, counts, _ = decision(EXACT, ([row], [k], [0]))
    assert counts == [drawn]
    assert got == full_decision([row], [k], [0])


@pytest.mark.parametrize(("ranks", "drawn"), [([0, 1], [2, 2]), ([1, 0], [3, 3])])
def test_a_model_that_can_only_tie_stops_when_it_loses_ties(
    ranks: list[int], drawn: list[int]
) -> None:
    # Model 0 has A A of 3; model 1 has B C: at best 2 of 3, a tie in confidence.
    codes = [[0, 0, 1], [1, 2, 1]]
    got, counts, _ = decision(EXACT, (codes, [3, 3], ranks))
    assert counts == drawn
    assert got == full_decision(codes, [3, 3], ranks)


def test_a_model_out_of_the_running_draws_no_more() -> None:
    # k = 5: model 0 opens A A A (3 of 5 at least), model 1 B C N (3 of 5 at most, and it
    # loses ties): stop.
    codes = [[0, 0, 0, 1, 1], [1, 2, N, 1, 1]]
    assert decision(EXACT, (codes, [5, 5], [0, 1])) == ((0, 0), [3, 3], 1)
    # When model 1 wins ties, it may still draw level: it draws on, model 0 (locked) too.
    got, counts, _ = decision(EXACT, (codes, [5, 5], [1, 0]))
    assert got == full_decision(codes, [5, 5], [1, 0]) == (1, 1)
    assert counts[1] == 5
    # Neither opening settles anything: both draw to the end.
    codes = [[0, 0, 1, 0, 0], [1, 1, 2, 1, 1]]
    got, counts, _ = decision(EXACT, (codes, [5, 5], [1, 0]))
    assert (got, counts) == (full_decision(codes, [5, 5], [1, 0]), [5, 5])
    assert got == (1, 1)


def test_confidence_counts_over_each_models_own_k() -> None:
    # Model 0: A A of k = 2 (confidence 1); model 1 may at best reach 4 of 4 but rank worse.
    codes = [[0, 0], [1, 1, 1, 1]]
    got, counts, _ = decision(EXACT, (codes, [2, 4], [0, 1]))
    assert (got, counts) == ((0, 0), [2, 3])
    # With the better rank, model 1 must be drawn to the end to know it ties.
    got, counts, _ = decision(EXACT, (codes, [2, 4], [1, 0]))
    assert (got, counts) == ((1, 1), [2, 4])


def test_a_model_without_any_vote_never_wins() -> None:
    codes = [[N, N, N], [1, N, N]]
    assert decision(EXACT, (codes, [3, 3], [0, 1]))[0] == full_decision(codes, [3, 3], [0, 1])
    assert full_decision(codes, [3, 3], [0, 1]) == (1, 1)
    assert decision(EXACT, ([[N, N, N], [N, N, N]], [3, 3], [0, 1]))[0] == (-1, N)


# --- approximate policies ----------------------------------------------------


FIRST_AGREE = Policy.parse("first-agree")
TWO_UNANIMOUS = Policy.parse("two-unanimous")


def test_first_agree_stops_exactly_when_every_first_answer_agrees() -> None:
    for table in random_tables(seed=13, count=2000):
        codes, ks, ranks = table
        firsts = {row[0] for row in codes}
        agree = len(firsts) == 1 and N not in firsts
        got, drawn, rounds = decision(FIRST_AGREE, table)
        if agree:
            assert (drawn, rounds) == ([1] * len(ks), 1)
            assert got == full_decision([row[:1] for row in codes], ks, ranks)
            assert got[1] == codes[0][0]
        else:
            assert drawn == ks
            assert got == full_decision(*table)


def test_two_unanimous_stops_when_the_unanimous_models_agree() -> None:
    for table in random_tables(seed=14, count=2000):
        codes, ks, ranks = table
        if min(ks) < 2:
            continue
        unanimous = {row[0] for row in codes if row[0] == row[1] != N}
        got, drawn, rounds = decision(TWO_UNANIMOUS, table)
        if len(unanimous) == 1:
            assert (drawn, rounds) == ([2] * len(ks), 1)
            assert got == full_decision([row[:2] for row in codes], ks, ranks)
        else:
            assert drawn == ks
            assert got == full_decision(*table)


def test_two_unanimous_hand_made() -> None:
    # Model 0 A A, model 1 B C, model 2 A A: the unanimous ones agree on A.
    codes = [[0, 0, 1], [1, 2, 1], [0, 0, 0]]
    assert decision(TWO_UNANIMOUS, (codes, [3, 3, 3], [1, 0, 2]))[1] == [2, 2, 2]
    # A second unanimous answer (model 1: B B) or no unanimous model: draw the rest.
    codes = [[0, 0, 1], [1, 1, 1], [0, 0, 0]]
    assert decision(TWO_UNANIMOUS, (codes, [3, 3, 3], [1, 0, 2]))[1] == [3, 3, 3]
    codes = [[0, 1, 1], [N, N, 1]]
    assert decision(TWO_UNANIMOUS, (codes, [3, 3], [0, 1]))[1] == [3, 3]


def test_a_lower_agree_threshold_never_draws_more() -> None:
    """Every agree:T draws the same rounds until it stops, and a lower T stops no later."""
    thresholds = [1.0, 0.75, 0.5, 0.34]
    for table in random_tables(seed=15, count=1500):
        played = [replay(Policy("agree", t), *table) for t in thresholds]
        for higher, lower in pairwise(played):
            assert lower.rounds <= higher.rounds
            assert all(a <= b for a, b in zip(lower.drawn, higher.drawn, strict=True))


def test_agree_decides_as_exact_when_it_stops_where_exact_would() -> None:
    for table in random_tables(seed=16, count=1500):
        agree = replay(Policy("agree", 0.5), *table)
        # Whenever it stops where exact would, it decides as exact does.
        seen = [row[:n] for row, n in zip(table[0], agree.drawn, strict=True)]
        if exact_done(seen, table[1], table[2]):
            assert (int(agree.selection.model), int(agree.selection.code)) == full_decision(*table)


def test_agree_one_stops_after_the_first_round_whenever_first_agree_does() -> None:
    for table in random_tables(seed=17, count=1500):
        if decision(FIRST_AGREE, table)[2] == 1 and table[1] != [1] * len(table[1]):
            assert decision(Policy("agree", 1.0), table)[2] == 1


def test_agree_stops_on_the_share_of_voters_holding_the_pick() -> None:
    # Three models, first answers A A B: two thirds hold the pick A.
    codes = [[0, 0, 0], [0, 1, 1], [1, 1, 1]]
    ks, ranks = [3, 3, 3], [0, 1, 2]
    assert decision(Policy("agree", 0.6), (codes, ks, ranks))[1:] == ([1, 1, 1], 1)
    assert decision(Policy("agree", 0.7), (codes, ks, ranks))[2] > 1


# --- names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("exact", "exact"),
        (" full ", "full"),
        ("first-agree", "first-agree"),
        ("two-unanimous", "two-unanimous"),
        ("agree:0.75", "agree:0.75"),
        ("agree:1", "agree:1"),
        ("agree", "agree:1"),
    ],
)
def test_policy_names_round_trip(text: str, name: str) -> None:
    assert str(Policy.parse(text)) == name
    assert Policy.parse(name) == Policy.parse(text)


def test_replaying_past_the_end_of_a_stream_is_an_error() -> None:
    with pytest.raises(ValueError, match="sample 2, beyond the 1 in its stream"):
        replay(Policy.parse("full"), [[0], [0, 0]], [2, 2], [0, 1])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("agree:", "threshold in (0, 1]"),
        ("agree:0", "threshold in (0, 1]"),
        ("agree:1.5", "threshold in (0, 1]"),
        ("agree:x", "threshold in (0, 1]"),
        ("agree:nan", "threshold in (0, 1]"),
        ("exact:3", "unknown adaptive policy"),
        ("sometimes", "unknown adaptive policy"),
        ("", "unknown adaptive policy"),
    ],
)
def test_bad_policy_names_are_one_clear_error(text: str, says: str) -> None:
    with pytest.raises(InputError, match=r".*") as error:
        Policy.parse(text)
    message = str(error.value)
    assert says in message and "\n" not in message
    assert repr(text) in message
