"""What ``slm-mux status`` prints: one Markdown table per kind of store record.

These render the store's record types (:class:`~slm_mux.store.Holding`,
:class:`~slm_mux.store.Failure`, :class:`~slm_mux.store.ReplicaRecord`);
they live beside the command until the store package gives each type its own
``to_markdown``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from slm_mux.tables import markdown_table

if TYPE_CHECKING:
    from slm_mux.store import Failure, Holding, ReplicaRecord


def holdings_table(holdings: Sequence[Holding]) -> str:
    """Samples held per task, split and model."""
    return markdown_table(
        ["task", "split", "model", "questions", "samples", "no answer", "accuracy", "failed"],
        [
            [
                *(h.task, h.split, h.model, str(h.questions), str(h.samples)),
                *(str(h.no_answer), "-" if h.accuracy is None else f"{h.accuracy:.4f}"),
                str(h.failed),
            ]
            for h in holdings
        ],
        ("left", "left", "left", "right", "right", "right", "right", "right"),
    )


def failures_table(failures: Sequence[Failure]) -> str:
    """Questions whose collection failed, with their last error."""
    return markdown_table(
        ["model", "task", "split", "question", "attempts", "last error"],
        [[f.model, f.task, f.split, f.question_id, str(f.attempts), f.error] for f in failures],
        ("left", "left", "left", "left", "right", "left"),
    )


def replicas_table(replicas: Sequence[ReplicaRecord]) -> str:
    """Requests, errors and cooldowns per server of each model's latest collection."""
    return markdown_table(
        ["model", "server", "requests", "errors", "cooldowns", "collected at"],
        [
            [r.model, r.url, *map(str, (r.requests, r.errors, r.cooldowns)), r.collected_at]
            for r in replicas
        ],
        ("left", "left", "right", "right", "right", "left"),
    )


def status_text(
    holdings: Sequence[Holding],
    failures: Sequence[Failure],
    replicas: Sequence[ReplicaRecord],
) -> str:
    """The holdings table, then the failures and servers tables when there are any."""
    parts = [holdings_table(holdings)]
    if failures:
        parts.append(
            "\nFailed questions (retried by the next collect):\n\n" + failures_table(failures)
        )
    if replicas:
        parts.append("\nServers per model (its latest collection):\n\n" + replicas_table(replicas))
    return "".join(parts)
