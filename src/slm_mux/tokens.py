"""Token counts: one rule for every count that enters or leaves the store.

A count is an integer from 0 to 2**63-1, what an SQLite ``INTEGER`` holds.

- What a model server reports is read with :func:`token_count`: anything else
  (negative, fractional, too large, not a number) is *unknown* (``None``), so
  one server's bad bookkeeping neither fails a sample nor skews a total.
- The store applies the same rule to every sample and recorded call it writes
  or reads, so a store written before this rule (which may hold ``-25``)
  exports counts that ``import`` takes back.
- A file to import must give counts that pass :func:`is_count` (or ``null``);
  one that does not is refused with a line naming the file and line: an
  import is the user's data, and a bad number there is a bad file.
"""

from __future__ import annotations

from typing import TypeGuard

COUNT_END = 2**63
"""One past the largest count (SQLite integers end at 2**63-1)."""


def is_count(value: object, least: int = 0) -> TypeGuard[int]:
    """Whether ``value`` is an integer (not a bool) from ``least`` to 2**63-1."""
    return isinstance(value, int) and not isinstance(value, bool) and least <= value < COUNT_END


def token_count(value: object) -> int | None:
    """A reported token count as slm-mux keeps it: the count, or ``None`` (unknown)
    when it is not one (:func:`is_count`)."""
    return value if is_count(value) else None
