"""``draw`` takes exactly the slots of the ``k`` smallest keys, on its fast path and off it."""

from __future__ import annotations

import numpy as np

from slm_mux.analysis.draws import bases, draw, slot_keys


def _smallest(keys: np.ndarray, recorded: np.ndarray, k: int) -> np.ndarray:
    """The definition: sort each row's recorded keys, keep the first k slots, in slot order."""
    out = np.empty((*keys.shape[:-1], k), dtype=np.int64)
    for cell in np.ndindex(keys.shape[:-1]):
        row = keys[cell][: recorded[cell]]
        out[cell] = sorted(sorted(range(len(row)), key=row.__getitem__)[:k])
    return out


def test_draw_matches_the_definition_for_every_width_and_k() -> None:
    rng = np.random.default_rng(1)
    base = bases(["a", "b", "c"], [f"q{q}" for q in range(40)])
    for width in (1, 2, 3, 5, 8, 9, 16, 17):
        recorded = rng.integers(1, width + 1, size=base.shape)
        for trial in range(3):
            keys = slot_keys(base, seed=5, trial=trial, width=width)
            for k in range(1, width + 1):
                enough = np.maximum(recorded, k)
                np.testing.assert_array_equal(
                    draw(keys, enough, k), _smallest(keys, enough, k), err_msg=f"{width=} {k=}"
                )


def test_keys_equal_but_for_their_lowest_bits_are_still_ordered_exactly() -> None:
    # Width 4 uses the 2 lowest bits for slot numbers: 0x13 and 0x10 agree above them.
    keys = np.array([[[0x13, 0x10, 0x40, 0x50], [0x50, 0x40, 0x21, 0x22]]], dtype=np.uint64)
    recorded = np.full((1, 2), 4, dtype=np.int64)
    np.testing.assert_array_equal(draw(keys, recorded, 1), [[[1], [2]]])
    np.testing.assert_array_equal(draw(keys, recorded, 3), [[[0, 1, 2], [1, 2, 3]]])
