"""Markdown tables, rendered in one place for every command and report."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Literal

Align = Literal["left", "right"]

_RULE = {"left": "---", "right": "---:"}


def markdown_cell(text: str) -> str:
    """``text`` as one cell: whitespace collapsed, HTML specials and ``|`` escaped."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def markdown_table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    align: Sequence[Align] | None = None,
) -> str:
    """A Markdown table of ``rows`` under ``header``, ending in a newline.

    ``align`` gives each column's alignment (default: all left). Every cell
    goes through :func:`markdown_cell`, so a ``|`` or a line break in a model
    name or an answer cannot break the table. A row of the wrong width is a
    programming error (``ValueError``).
    """
    columns = len(header)
    alignment = list(align) if align is not None else ["left"] * columns
    if len(alignment) != columns:
        raise ValueError(f"{len(alignment)} alignments for {columns} columns")
    lines = [
        _row(header),
        "|" + "|".join(_RULE[a] for a in alignment) + "|",
    ]
    for row in rows:
        if len(row) != columns:
            raise ValueError(f"row of {len(row)} cells in a table of {columns} columns: {row!r}")
        lines.append(_row(row))
    return "\n".join(lines) + "\n"


def numeric_right(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[Align]:
    """Right alignment for the columns whose every cell is a number (``12``, ``0.5``, ``3 %``)."""

    def numeric(cell: str) -> bool:
        try:
            float(cell.replace(",", "").removesuffix("%").strip())
        except ValueError:
            return False
        return True

    return [
        "right" if rows and all(numeric(row[c]) for row in rows) else "left"
        for c in range(len(header))
    ]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(markdown_cell(cell) for cell in cells) + " |"
