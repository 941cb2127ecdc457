"""Markdown tables: one renderer for every command and report."""

from __future__ import annotations

import pytest

from slm_mux.tables import markdown_table, numeric_right


def test_cells_are_escaped_and_columns_aligned() -> None:
    table = markdown_table(
        ["model", "accuracy"], [["a|b", "0.5"], ["two\nlines <x>", "1"]], ["left", "right"]
    )
    assert table.splitlines() == [
        "| model | accuracy |",
        "|---|---:|",
        "| a\\|b | 0.5 |",
        "| two lines &lt;x&gt; | 1 |",
    ]


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="row of 1 cells in a table of 2 columns"):
        markdown_table(["a", "b"], [["only one"]])


def test_numbers_go_right_and_words_left() -> None:
    rows = [["tiny-mul", "83.85%", "1,250", "-", "22 / 0 / 48"], ["x", "0.5", "3", "1", "-"]]
    header = ["model", "accuracy", "calls", "failed", "groupthink"]
    assert numeric_right(header, rows) == ["left", "right", "right", "left", "left"]
    assert numeric_right(header, []) == ["left"] * 5
