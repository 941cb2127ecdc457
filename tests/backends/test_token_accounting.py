"""Splitting a response's token counts across its choices, and pricing them."""

from __future__ import annotations

import pytest

from slm_mux.backends import Completion, Price, Usage, split_tokens


@pytest.mark.parametrize(
    ("total", "weights", "shares"),
    [
        (10, [1, 1, 1], [4, 3, 3]),
        (9, [1, 1, 1], [3, 3, 3]),
        (100, [10, 30, 60], [10, 30, 60]),
        (7, [1, 2], [2, 5]),
        (5, [0, 0], [3, 2]),
        (0, [3, 1], [0, 0]),
        (4, [0, 5], [0, 4]),
        (None, [1, 2], [None, None]),
        (5, [], []),
    ],
)
def test_split_tokens(total: int | None, weights: list[int], shares: list[int | None]) -> None:
    assert split_tokens(total, weights) == shares


@pytest.mark.parametrize("total", [1, 17, 1000, 12345])
def test_split_tokens_adds_up(total: int) -> None:
    assert sum(s or 0 for s in split_tokens(total, [3, 0, 11, 7, 1])) == total


def test_usage_totals_and_cost() -> None:
    usage = Usage()
    usage.add([Completion("a", 10, 5, 0.1, "stop"), Completion("b", None, 7, 0.1, None)])
    assert (usage.completions, usage.prompt_tokens, usage.completion_tokens) == (2, 10, 12)
    assert usage.cost_usd(None) is None
    assert usage.cost_usd(Price(2.0, 10.0)) == pytest.approx((10 * 2.0 + 12 * 10.0) / 1e6)
