"""What a store holds, as data that renders itself (``slm-mux status``).

:meth:`Store.status <slm_mux.store.Store.status>` returns a :class:`StoreStatus`;
the command line prints :meth:`StoreStatus.to_markdown` or
:meth:`StoreStatus.to_json`, and other front ends render :meth:`StoreStatus.tables`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from slm_mux.store.records import Failure, Holding, ReplicaRecord
from slm_mux.tables import Align, markdown_table


@dataclass(frozen=True)
class StatusTable:
    """One table of a status: the line above it (``None`` for the first), header, rows."""

    title: str | None
    header: tuple[str, ...]
    align: tuple[Align, ...]
    rows: list[list[str]]

    def to_markdown(self) -> str:
        """The table in Markdown, ending in a newline."""
        return markdown_table(self.header, self.rows, self.align)


@dataclass(frozen=True)
class StoreStatus:
    """A store's holdings per task, split and model; its failed questions; its servers."""

    holdings: Sequence[Holding]
    failures: Sequence[Failure]
    replicas: Sequence[ReplicaRecord]

    @property
    def empty(self) -> bool:
        """Whether the store holds no sample and no failure."""
        return not self.holdings

    def tables(self) -> list[StatusTable]:
        """The holdings table, then the failures and servers tables when there are any."""
        holdings = StatusTable(
            None,
            ("task", "split", "model", "questions", "samples", "no answer", "accuracy", "failed"),
            ("left", "left", "left", "right", "right", "right", "right", "right"),
            [
                [
                    *(h.task, h.split, h.model, str(h.questions), str(h.samples)),
                    *(str(h.no_answer), "-" if h.accuracy is None else f"{h.accuracy:.4f}"),
                    str(h.failed),
                ]
                for h in self.holdings
            ],
        )
        tables = [holdings]
        if self.failures:
            tables.append(
                StatusTable(
                    "Failed questions (retried by the next collect):",
                    ("model", "task", "split", "question", "attempts", "last error"),
                    ("left", "left", "left", "left", "right", "left"),
                    [
                        [f.model, f.task, f.split, f.question_id, str(f.attempts), f.error]
                        for f in self.failures
                    ],
                )
            )
        if self.replicas:
            tables.append(
                StatusTable(
                    "Servers per model (its latest collection):",
                    ("model", "server", "requests", "errors", "cooldowns", "collected at"),
                    ("left", "left", "right", "right", "right", "left"),
                    [
                        [
                            r.model,
                            r.url,
                            *map(str, (r.requests, r.errors, r.cooldowns)),
                            r.collected_at,
                        ]
                        for r in self.replicas
                    ],
                )
            )
        return tables

    def to_markdown(self) -> str:
        """Every table, each after its title line (``""`` when the store is empty)."""
        if self.empty:
            return ""
        parts = []
        for table in self.tables():
            if table.title is not None:
                parts.append(f"\n{table.title}\n\n")
            parts.append(table.to_markdown())
        return "".join(parts)

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        """``{"holdings": [...], "failures": [...], "replicas": [...]}``, one object a row."""
        return {
            "holdings": [asdict(h) for h in self.holdings],
            "failures": [asdict(f) for f in self.failures],
            "replicas": [asdict(r) for r in self.replicas],
        }
