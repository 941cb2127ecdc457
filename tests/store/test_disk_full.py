"""A full disk under an import, a merge or a collection is one line naming the store and
saying so ("database or disk is full"), and the store keeps what it held."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slm_mux.cli import main
from slm_mux.store import Store, sqlite
from slm_mux.store import core as store_core
from slm_mux.store import staging as store_staging


def write_samples(path: Path, models: int, questions: int = 40) -> Path:
    rows = [
        {
            "model": f"m{m}",
            "question_id": f"q{q}",
            "sample": 0,
            "split": "test",
            "reference": "1",
            "answer": "1",
            "text": "x" * 2000,
        }
        for m in range(models)
        for q in range(questions)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Every connection to a file named in the list yields: the disk is full beyond the pages
    the file has now (``PRAGMA max_page_count``)."""
    full: list[Path] = []
    connect = sqlite.connect

    def limited(path: Path, uri: str, *, any_thread: bool = False) -> sqlite.Connection:
        conn = connect(path, uri, any_thread=any_thread)
        if Path(path).absolute() in full:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages + 1}")
        return conn

    for module in (sqlite, store_core, store_staging):
        monkeypatch.setattr(module, "connect", limited)
    yield full


def test_an_import_onto_a_full_disk_says_so_and_names_the_store(
    tmp_path: Path, full_disk: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s.db"
    assert main(["import", str(write_samples(tmp_path / "a.jsonl", 1)), "--store", str(store)]) == 0
    capsys.readouterr()
    full_disk.append(store)
    assert main(["import", str(write_samples(tmp_path / "b.jsonl", 3)), "--store", str(store)]) == 1
    err = capsys.readouterr().err
    assert err == f"slm-mux: error: {store}: database or disk is full\n"
    with Store(store) as opened:
        assert opened.count() == 40  # all or nothing


def test_a_merge_onto_a_full_disk_says_so_and_names_the_store(
    tmp_path: Path, full_disk: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, other = tmp_path / "s.db", tmp_path / "other.db"
    assert main(["import", str(write_samples(tmp_path / "a.jsonl", 1)), "--store", str(store)]) == 0
    assert main(["import", str(write_samples(tmp_path / "b.jsonl", 3)), "--store", str(other)]) == 0
    capsys.readouterr()
    full_disk.append(store)
    assert main(["import", str(other), "--store", str(store)]) == 1
    assert capsys.readouterr().err == f"slm-mux: error: {store}: database or disk is full\n"


def test_a_staging_area_on_a_full_disk_says_so_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The staging file (beside the store) fills up while the files are staged."""
    made = store_staging.Staging.__init__

    def on_full_disk(self: store_staging.Staging, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count = {pages + 1}")

    monkeypatch.setattr(store_staging.Staging, "__init__", on_full_disk)
    store = tmp_path / "s.db"
    assert main(["import", str(write_samples(tmp_path / "b.jsonl", 3)), "--store", str(store)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"slm-mux: error: {tmp_path}/s.db.import-")
    assert err.endswith("/staging.db: database or disk is full\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jsonl"]
