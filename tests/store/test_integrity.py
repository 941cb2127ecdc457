"""Store integrity under abuse: conflicting imports, damaged and read-only stores, status."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from slm_mux.cli import main
from slm_mux.errors import StoreError
from slm_mux.sample import Sample
from slm_mux.store import SCHEMA_VERSION, Store


def record(**fields: Any) -> dict[str, Any]:
    base = {"model": "a", "question_id": "q1", "sample": 0, "answer": "42", "reference": "42"}
    return {**base, "split": "test", **fields}


def write(path: Path, *records: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def one_error(err: str) -> str:
    """The one error line of ``err`` (progress lines may precede it; no traceback)."""
    errors = [line for line in err.splitlines() if line.startswith("slm-mux: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def snapshot(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM samples ORDER BY 1, 2, 3, 4, 5").fetchall()


def test_one_file_with_two_references_for_an_id_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write(tmp_path / "a.jsonl", record(), record(model="b", reference="41"))
    db = tmp_path / "s.db"
    status, _, err = run(capsys, "import", str(data), "--store", str(db))
    assert status == 1
    line = one_error(err)
    assert f"{data}:2: question 'q1'" in line
    assert "'41'" in line and f"'42' at {data}:1" in line
    assert not db.exists()


def test_references_clashing_across_files_or_with_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write(tmp_path / "a.jsonl", record())
    second = write(tmp_path / "b.jsonl", record(model="b"), record(model="b", question_id="q2"))
    clash = write(tmp_path / "c.jsonl", record(model="c", reference="41"))
    db = tmp_path / "s.db"
    status, _, err = run(capsys, "import", str(first), str(clash), "--store", str(db))
    assert status == 1 and f"{clash}:1: question 'q1'" in one_error(err)
    assert f"'42' at {first}:1" in err and not db.exists()

    assert run(capsys, "import", str(first), str(second), "--store", str(db))[0] == 0
    before = snapshot(db)
    status, _, err = run(capsys, "import", str(clash), "--store", str(db))
    assert status == 1
    line = one_error(err)
    assert f"{clash}:1: question 'q1' (exact, test) has reference '41'" in line
    assert f"{db} holds it with reference '42'" in line
    assert snapshot(db) == before


def test_authors_files_clashing_by_id_store_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def authors(name: str, reference: str) -> Path:
        item = {"id": "p1", "question": "1+1?", "answer": reference}
        doc = {"model": name, "responses": [{**item, "samples": [{"extracted_answer": "2"}]}]}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        return path

    db = tmp_path / "s.db"
    files = [str(authors("a", "2")), str(authors("b", "3"))]
    status, _, err = run(capsys, "import", *files, "--split", "test", "--store", str(db))
    assert status == 1
    assert "b.json: responses[0]: question 'p1'" in one_error(err)
    assert not db.exists()


def test_a_stored_sample_coming_back_different_is_a_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    data = write(tmp_path / "a.jsonl", record(), record(sample=1, answer="7"))
    assert run(capsys, "import", str(data), "--store", str(db))[0] == 0
    before = snapshot(db)

    status, _, err = run(capsys, "import", str(data), "--store", str(db))
    assert status == 0 and "2 samples read, 0 new" in err
    assert snapshot(db) == before

    changed = write(tmp_path / "b.jsonl", record(question_id="q2"), record(sample=1, answer="8"))
    status, _, err = run(capsys, "import", str(changed), "--store", str(db))
    assert status == 1
    line = one_error(err)
    assert f"{changed}:2: sample 1 of 'a' on question 'q1' (exact, test)" in line
    assert "stored with answer '7'" in line and "says '8'" in line
    assert snapshot(db) == before

    status, _, err = run(capsys, "import", str(changed), "--replace", "--store", str(db))
    assert status == 0 and "2 samples read, 1 new, 1 replaced" in err
    with Store(db) as store:
        answers = {(s.question_id, s.sample): (s.answer, s.correct) for s in store.samples()}
    assert answers == {("q1", 0): ("42", True), ("q1", 1): ("8", False), ("q2", 0): ("42", True)}


def test_the_grader_wins_over_an_imported_correct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write(
        tmp_path / "a.jsonl",
        record(answer="41", correct=True),
        record(sample=1, correct=True),
        record(sample=2, answer="0", correct=True),
    )
    db = tmp_path / "s.db"
    status, _, err = run(capsys, "import", str(data), "--store", str(db))
    assert status == 0
    assert "warning: 2 imported samples give a 'correct'" in err and f"(first: {data}:1)" in err
    status, out, _ = run(capsys, "status", "--store", str(db), "--json")
    (holding,) = json.loads(out)["holdings"]
    assert holding["accuracy"] == pytest.approx(1 / 3)


def test_an_old_store_is_regraded_by_its_migration(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.add([Sample("a", "exact", "q1", "test", 0, "41", "42")])
    with sqlite3.connect(db) as conn:  # as a version 1 store kept an imported verdict
        conn.execute("UPDATE samples SET correct = 1")
        conn.execute("UPDATE schema_version SET version = 1")
    conn.close()
    with pytest.raises(StoreError, match="version 1 needs an upgrade"):
        Store(db, readonly=True)
    with Store(db) as store:
        assert [s.correct for s in store.samples()] == [False]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def _damaged(tmp_path: Path) -> Path:
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.add(
            Sample(f"m{m}", "exact", f"q{q:04d}", "test", s, str(s), "1")
            for m in range(3)
            for q in range(300)
            for s in range(4)
        )
    size = db.stat().st_size
    with db.open("r+b") as stream:  # keep the 100-byte header, ruin the pages after it
        stream.seek(4096 + 100)
        stream.write(b"\xa5" * (size - 4096 * 3))
    return db


@pytest.mark.parametrize("command", ["status", "eval", "export", "import"])
def test_a_damaged_store_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    db = _damaged(tmp_path)
    damaged = db.read_bytes()
    argv = [command, "--store", str(db)]
    if command == "import":
        argv.insert(1, str(write(tmp_path / "a.jsonl", record(model="new"))))
    status, _, err = run(capsys, *argv)
    assert status == 1
    line = one_error(err)
    assert f"{db}: " in line
    assert any(word in line for word in ("malformed", "not a database", "damaged"))
    assert db.read_bytes() == damaged


def test_a_read_only_open_reads_and_refuses_writes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.add([Sample("a", "exact", "q1", "test", 0, "1", "1")])
    with Store(db, readonly=True) as store:
        assert store.count() == 1
        with pytest.raises(StoreError, match=rf"{db}: cannot write"):
            store.add([Sample("a", "exact", "q2", "test", 0, "1", "1")])
    with pytest.raises(StoreError, match="no such store"):
        Store(tmp_path / "absent.db", readonly=True)


def _can_mount_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount --bind -o ro / /mnt"], capture_output=True
    )
    return probe.returncode == 0


_READ_ONLY = """
import sys
from slm_mux.cli import main
folder = sys.argv[1]
for argv in (["status"], ["eval", "--k", "1", "--trials", "1"], ["export"],
             ["import", folder + "/more.jsonl"]):
    print("exit", argv[0], main([*argv, "--store", folder + "/s.db"]), flush=True)
"""


@pytest.mark.skipif(
    sys.platform != "linux" or not _can_mount_read_only(),
    reason="needs a private read-only bind mount (unshare -m, as root)",
)
def test_a_store_on_a_read_only_mount_is_readable_and_refuses_imports(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    write(folder / "data.jsonl", record(), record(model="b", answer="7"))
    write(folder / "more.jsonl", record(model="c"))
    assert main(["import", str(folder / "data.jsonl"), "--store", str(folder / "s.db")]) == 0
    before = sorted(p.name for p in folder.iterdir())
    script = f'mount --bind -o ro "$1" "$1" && exec "{sys.executable}" -c \'{_READ_ONLY}\' "$1"'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(folder)], capture_output=True, text=True
    )
    assert "Traceback" not in done.stderr
    exits = [line for line in done.stdout.splitlines() if line.startswith("exit")]
    assert exits == ["exit status 0", "exit eval 0", "exit export 0", "exit import 1"]
    assert "| exact | test | a | 1 | 1 | 0 | 1.0000 | 0 |" in done.stdout
    assert '"model": "b"' in done.stdout
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [
        f"slm-mux: error: {folder / 's.db'}: cannot write (the file or its folder is read-only)"
    ]
    assert sorted(p.name for p in folder.iterdir()) == before


def test_status_shows_failure_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.add([Sample("a", "exact", "q1", "test", 0, "1", "1")])
        store.record_failure("a", "exact", "q2", "test", "HTTP 500: upstream | exploded")
        store.record_failure("a", "exact", "q2", "test", "HTTP 500: upstream | exploded")
    status, out, _ = run(capsys, "status", "--store", str(db))
    assert status == 0
    assert "| a | exact | test | q2 | 2 | HTTP 500: upstream \\| exploded |" in out
    status, out, _ = run(capsys, "status", "--store", str(db), "--json")
    (failure,) = json.loads(out)["failures"]
    assert (failure["question_id"], failure["attempts"]) == ("q2", 2)


def test_json_lines_of_arrays_are_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text('["a", "q1", 0]\n["a", "q1", 1]\n')
    status, _, err = run(capsys, "import", str(data), "--store", str(tmp_path / "s.db"))
    assert status == 1
    line = one_error(err)
    assert f"{data}:1: expected a JSON object (one sample per line), got an array" in line
    assert "authors' layout" in line and "no split" not in line
