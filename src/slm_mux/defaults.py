"""The one default ``k`` (samples per model in one SLM-MUX vote), for every command.

* A pool file's ``defaults.k`` defaults to :data:`DEFAULT_K`; live commands
  (``collect``, ``ask``, ``compare``, ``serve``) use each model's ``k`` from the pool.
* The demo writes its pool with ``k`` = :data:`DEFAULT_K` unless ``--k`` says otherwise.
* Offline commands (``eval``, ``search``, ``report``, and ``run``'s evaluation)
  vote on recorded samples: :func:`offline_k` caps :data:`DEFAULT_K` at the fewest
  samples the store holds, and the command notes it on stderr when the store holds
  fewer or more samples than the vote uses.

Every table and JSON object of a result names the ``k`` it used.
"""

from __future__ import annotations

DEFAULT_K = 3
"""Samples per model in one SLM-MUX vote when nothing says otherwise (the paper's k)."""

MAX_K = 1000
"""Most samples per model per question, wherever k is given: ``--k``, ``--samples``,
a pool file's ``k``, a ``serve`` request's ``k``."""
MAX_SEED = 2**32 - 1
"""Seeds are 32-bit wherever given: numpy, ``random``, torch and servers all take them."""


def offline_k(fewest: int, most: int, *, replaying: bool = False) -> int:
    """The ``k`` of an offline vote without ``--k``, over a store whose models hold from
    ``fewest`` to ``most`` samples of each question.

    :data:`DEFAULT_K` capped at ``fewest``, so that every question can be voted
    on. One exception: replaying adaptive policies on a store collected
    adaptively (``fewest < most``: each question holds the prefix its policy
    drew) uses ``most``, the k it was collected with, the only k whose draws
    the recorded prefixes replay exactly.
    """
    if replaying and fewest < most:
        return most
    return max(1, min(DEFAULT_K, fewest))
