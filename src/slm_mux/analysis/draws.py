"""Seeded draws of ``k`` recorded samples per (model, question), independent of order.

A draw depends only on (seed, model name, question id, trial, slot): each
recorded slot gets a key from a counter-based hash (splitmix64 finalizer, in
numpy ``uint64``) of a per-(model, question) base and the trial, and the
``k`` slots with the smallest keys are drawn, kept in recorded order. The
same model therefore gets the same samples whatever other models or questions
are evaluated beside it and in whatever order they are given. Bases come from
BLAKE2b of the names, never from Python's salted ``hash()``, so runs agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

U64 = NDArray[np.uint64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_LAST = np.uint64(2**64 - 1)


@lru_cache(maxsize=1 << 16)
def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (BLAKE2b)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def mix(x: U64) -> U64:
    """The splitmix64 finalizer: a bijection of ``uint64`` that scatters every input bit."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _MUL1
        x = (x ^ (x >> np.uint64(27))) * _MUL2
    return x ^ (x >> np.uint64(31))


def _hashes(names: Sequence[str]) -> U64:
    return np.array([stable_hash(name) for name in names], dtype=np.uint64)


def bases(models: Sequence[str], question_ids: Sequence[str]) -> U64:
    """The per-(model, question) base ``[models, questions]`` of every draw."""
    return mix(_hashes(models)[:, None] ^ mix(_hashes(question_ids))[None, :])


def slot_keys(base: U64, *, seed: int, trial: int, width: int) -> U64:
    """Keys ``[..., width]`` of the slots of each base in one trial of one seed."""
    trial_key = np.uint64(stable_hash(f"seed {seed} trial {trial}"))
    row = mix(base ^ trial_key)
    with np.errstate(over="ignore"):
        slots = np.arange(1, width + 1, dtype=np.uint64) * _GOLDEN
        return mix(row[..., None] + slots)


def draw(keys: U64, recorded: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    """Slots of the ``k`` smallest keys among each row's ``recorded`` first slots, sorted.

    Each key's lowest bits are replaced by its slot number and the rows sorted:
    the first ``k`` slots are those of the ``k`` smallest keys unless the ``k``-th
    and the next key agree in all the other bits (odds of about ``width / 2**60``
    per row), in which case the full keys are sorted instead.
    """
    width = keys.shape[-1]
    if k == width:
        return np.broadcast_to(np.arange(width), keys.shape).copy()
    slots = np.arange(width, dtype=np.uint64)
    if (recorded < width).any():
        keys = np.where(slots < recorded[..., None], keys, _LAST)
    low = np.uint64((1 << (width - 1).bit_length()) - 1)
    packed = keys & ~low
    packed |= slots
    packed.sort(axis=-1)
    if ((packed[..., k - 1] ^ packed[..., k]) <= low).any():
        chosen = np.argsort(keys, axis=-1)[..., :k]
    else:
        chosen = (packed[..., :k] & low).astype(np.int64)
    chosen.sort(axis=-1)
    return chosen
