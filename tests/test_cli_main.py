"""How ``slm-mux`` ends: a closed pipe, a failing database, file or disk, each in one quiet
line; an ``OSError`` that is no I/O at the command's edges is a bug and shows its traceback."""

from __future__ import annotations

import errno
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from slm_mux.cli import main
from slm_mux.store import Store


def _store(tmp_path: Path, samples: int) -> Path:
    """A store of ``samples`` imported samples (one model, test split)."""
    data = tmp_path / "recorded.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "model": "a",
                    "question_id": f"q{i}",
                    "sample": 0,
                    "answer": "1",
                    "reference": "1",
                    "split": "test",
                }
            )
            + "\n"
            for i in range(samples)
        )
    )
    db = tmp_path / "s.db"
    assert main(["import", str(data), "--store", str(db)]) == 0
    return db


def test_export_into_a_pipe_closed_after_one_line_exits_quietly(tmp_path: Path) -> None:
    db = _store(tmp_path, 5000)  # about 1 MB of JSON Lines, far more than a pipe buffers
    export = subprocess.Popen(
        [sys.executable, "-m", "slm_mux", "export", "--store", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None and export.stderr is not None
    first = json.loads(export.stdout.readline())
    export.stdout.close()  # what ``| head -1`` does after its line
    errors = export.stderr.read()
    assert export.wait(timeout=120) == 0
    assert errors == b""
    assert first["question_id"] == "q0"


def test_a_database_error_is_one_line_naming_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _store(tmp_path, 3)

    def failing(self: Store) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Store, "summary", failing)
    capsys.readouterr()
    assert main(["status", "--store", str(db)]) == 1
    assert capsys.readouterr().err == f"slm-mux: error: {db}: disk I/O error\n"


def test_an_error_message_of_several_lines_is_printed_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _store(tmp_path, 3)

    def failing(self: Store) -> object:
        raise OSError(errno.EIO, "the disk\nwent away")

    monkeypatch.setattr(Store, "summary", failing)
    capsys.readouterr()
    assert main(["status", "--store", str(db)]) == 1
    assert capsys.readouterr().err == "slm-mux: error: the disk went away\n"


def test_an_os_error_on_a_named_file_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _store(tmp_path, 3)

    def failing(self: Store) -> object:
        raise PermissionError(errno.EACCES, "Permission denied", str(db))

    monkeypatch.setattr(Store, "summary", failing)
    capsys.readouterr()
    assert main(["status", "--store", str(db)]) == 1
    assert capsys.readouterr().err == f"slm-mux: error: {db}: Permission denied\n"


@pytest.mark.parametrize(
    "bug",
    [
        OSError(errno.EBADF, "Bad file descriptor"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        TimeoutError(),
    ],
    ids=["bad-descriptor", "connection-reset", "timeout"],
)
def test_an_os_error_that_names_no_file_is_a_bug_and_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bug: OSError
) -> None:
    db = _store(tmp_path, 3)

    def failing(self: Store) -> object:
        raise bug

    monkeypatch.setattr(Store, "summary", failing)
    with pytest.raises(type(bug)):
        main(["status", "--store", str(db)])


def test_a_bug_shows_its_traceback_from_the_installed_command(tmp_path: Path) -> None:
    db = _store(tmp_path, 3)
    script = (
        "import sys\n"
        "from slm_mux.cli import main\n"
        "from slm_mux.store import Store\n"
        "def failing(self):\n"
        "    raise ConnectionResetError(104, 'Connection reset by peer')\n"
        "Store.summary = failing\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, "status", "--store", str(db)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr
    assert "slm-mux: error:" not in run.stderr
