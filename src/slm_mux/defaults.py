"""The one default ``k`` (samples per model in one SLM-MUX vote), for every command.

* A pool file's ``defaults.k`` defaults to :data:`DEFAULT_K`; live commands
  (``collect``, ``ask``, ``compare``, ``serve``) use each model's ``k`` from the pool.
* The demo writes its pool with ``k`` = :data:`DEFAULT_K` unless ``--k`` says otherwise.
* Offline commands (``eval``, ``search``, ``report``, and ``run``'s evaluation)
  vote on recorded samples: :func:`offline_k` caps :data:`DEFAULT_K` at what the
  store holds, and the command says so when the cap or the store's extra samples
  change what a reader would assume.

Every table and JSON object of a result names the ``k`` it used.
"""

from __future__ import annotations

DEFAULT_K = 3
"""Samples per model in one SLM-MUX vote when nothing says otherwise (the paper's k)."""


def offline_k(recorded: int) -> int:
    """The ``k`` of an offline vote without ``--k``: :data:`DEFAULT_K`, capped at
    ``recorded``, the samples the store holds per model and question.

    ``recorded`` is the fewest any model has of any question, so that every
    question can be voted on; a replay of adaptive policies (whose stores hold
    prefixes of different lengths) passes the most.
    """
    return max(1, min(DEFAULT_K, recorded))
