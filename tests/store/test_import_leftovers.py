"""An import killed with ``kill -9`` leaves its staging area beside the store, and the next
import removes it; nothing is left in the temporary folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from slm_mux.cli import main
from slm_mux.store.staging import Staging

pytestmark = pytest.mark.skipif(os.name != "posix", reason="kill -9 and named pipes")


def stagings(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.staging"))


def write_samples(path: Path) -> Path:
    row = {"model": "a", "task": "exact", "split": "test", "question_id": "q1"}
    path.write_text(json.dumps({**row, "reference": "1", "sample": 0, "answer": "1"}) + "\n")
    return path


def dead_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_an_import_killed_with_kill_9_is_cleaned_by_the_next_one(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    pipe = tmp_path / "slow.jsonl"
    os.mkfifo(pipe)  # reading it blocks: the import is caught with its staging made
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    importing = subprocess.Popen(
        [sys.executable, "-m", "slm_mux", "import", str(pipe), "--store", str(store)], env=env
    )
    try:
        for _ in range(2000):
            if stagings(tmp_path) or importing.poll() is not None:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                importing.wait(timeout=0.05)
        assert importing.poll() is None, "the import should be waiting on the pipe"
        left = stagings(tmp_path)
        assert len(left) == 1
        assert left[0].name.startswith(f"s.db.import-{importing.pid}-")
    finally:
        importing.send_signal(signal.SIGKILL)
        importing.wait()
    assert stagings(tmp_path) == left  # kill -9 ran no cleanup
    assert list((tmp_path / "tmp").iterdir()) == []  # nothing went to the temporary folder

    assert main(["import", str(write_samples(tmp_path / "a.jsonl")), "--store", str(store)]) == 0
    assert stagings(tmp_path) == []


def test_stale_stagings_of_dead_processes_go_and_live_ones_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = Path("s.db")  # relative
    dead = tmp_path / f"s.db.import-{dead_pid()}-x1.staging"
    alive = tmp_path / f"s.db.import-{os.getppid()}-x2.staging"  # a process that runs
    other_store = tmp_path / f"t.db.import-{dead_pid()}-x3.staging"
    for folder in (dead, alive, other_store):
        folder.mkdir()
        (folder / "staging.db").write_bytes(b"x" * 1024)
    assert main(["import", str(write_samples(Path("a.jsonl"))), "--store", str(store)]) == 0
    assert stagings(tmp_path) == sorted([alive, other_store])


def test_a_staging_without_a_store_uses_the_temporary_folder_and_cleans_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"slm-mux-import-{dead_pid()}-x1.staging"
    stale.mkdir()
    with Staging() as staging:
        assert staging.path.parent.parent == tmp_path
        assert stagings(tmp_path) == [staging.path.parent]
    assert stagings(tmp_path) == []
