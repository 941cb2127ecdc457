"""Bad input to every command: one error line, the right exit status, no work, nothing changed.

One table, one row per bad input. Each row runs the real command line against a
folder of real files (a good store, damaged and foreign files, a pool whose
models are served by the loopback fake server) and checks that

* the exit status is 2 for a malformed command line, 1 for bad files or names;
* stderr is exactly one ``slm-mux: error:`` line naming the culprit, stdout is empty;
* no file in the folder changed and none appeared (no store, report or demo folder);
* no model was asked anything (the fake server saw no request).

Rows marked ``SUBPROCESS`` run ``python -m slm_mux`` in a child process, so the
promise holds for the installed command too, not only for :func:`slm_mux.cli.main`.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slm_mux.cli import main
from slm_mux.store import Store
from slm_mux.testing import FakeServer, run_fake_server

SUBPROCESS = True


def _sample(model: str, qid: str, split: str, sample: int) -> str:
    return json.dumps(
        {
            "model": model,
            "question_id": qid,
            "sample": sample,
            "answer": "1",
            "reference": "1",
            "split": split,
        }
    )


def _build_world(root: Path, base_url: str) -> None:
    """The files the rows refer to, all under ``root``."""
    recorded = root / "recorded.jsonl"
    recorded.write_text(
        "".join(
            _sample(m, f"{split}-{q}", split, s) + "\n"
            for m in ("a", "b")
            for split in ("validation", "test")
            for q in range(3)
            for s in range(2)
        )
    )
    assert main(["import", str(recorded), "--store", str(root / "good.db")]) == 0
    Store(root / "empty.db").close()
    damaged = bytearray((root / "good.db").read_bytes())
    damaged[100:4000] = b"\xff" * 3900  # the schema page: unreadable, not merely wrong
    (root / "damaged.db").write_bytes(bytes(damaged))
    (root / "zero.db").write_bytes(b"")
    (root / "notes.txt").write_text("not a store\n")
    (root / "folder").mkdir()
    (root / "malformed.jsonl").write_text(_sample("a", "q1", "test", 0) + "\n{oops\n")
    (root / "questions.jsonl").write_text(
        json.dumps({"question": "What is 1+1?", "answer": "#### 2"}) + "\n"
    )
    (root / "no-questions.jsonl").write_text("")
    models = [
        {"name": name, "backend": "openai", "base_url": base_url, "model": name}
        for name in ("a", "b")
    ]
    (root / "pool.yaml").write_text(json.dumps({"models": models}))
    (root / "broken.yaml").write_text("models: [\n")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00models")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FakeServer]]:
    """The fake server that would answer the pool's models: ``(base_url, server)``."""
    with run_fake_server() as running:
        yield running


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, served: tuple[str, FakeServer]) -> Path:
    root = tmp_path_factory.mktemp("world")
    _build_world(root, served[0])
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: a hash of each file's bytes, ``/`` for a folder."""
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "/"
        )
        for path in sorted(root.rglob("*"))
    }


def _row(argv: str, status: int, *fragments: str, subprocess: bool = False) -> object:
    """One bad input: the command line, its exit status, and what its error line must say."""
    return pytest.param(argv, status, fragments, subprocess, id=argv)


USAGE = 2  # a malformed command line
BAD = 1  # bad files, names or values found while working

ROWS = [
    # --- every command: the command line itself
    _row("", USAGE, "the following arguments are required: COMMAND"),
    _row("bogus", USAGE, "argument COMMAND: invalid choice: 'bogus'", subprocess=SUBPROCESS),
    _row("eval", USAGE, "the following arguments are required: --store"),
    _row("eval --store good.db --frobnicate 1", USAGE, "unrecognized arguments: --frobnicate 1"),
    # --- import
    _row("import absent.jsonl --store new.db", BAD, "absent.jsonl: no such file"),
    _row("import folder --store new.db", BAD, "folder: cannot read"),
    _row("import malformed.jsonl --store new.db", BAD, "malformed.jsonl:2:", subprocess=SUBPROCESS),
    _row("import recorded.jsonl --store folder", USAGE, "argument --store: 'folder' is a folder"),
    _row("import recorded.jsonl --store notes.txt/x.db", USAGE, "notes.txt is not a folder"),
    _row("import recorded.jsonl --store notes.txt", BAD, "notes.txt: ", "not a sample store"),
    _row("import recorded.jsonl --store damaged.db", BAD, "damaged.db: ", "malformed"),
    _row("import recorded.jsonl --store new.db --split train", USAGE, "argument --split"),
    _row("import recorded.jsonl --store new.db --task nope", USAGE, "argument --task"),
    # --- export
    _row("export --store absent.db", BAD, "absent.db: no such store"),
    _row("export --store folder", USAGE, "argument --store: 'folder' is a folder"),
    _row("export --store notes.txt", BAD, "notes.txt: ", "not a sample store"),
    _row("export --store zero.db", BAD, "zero.db: ", "not a sample store"),
    _row("export --store damaged.db", BAD, "damaged.db: ", "malformed", subprocess=SUBPROCESS),
    _row("export --store good.db --models ghost", BAD, "--models 'ghost' matches no sample"),
    _row("export --store good.db --models a,ghost", BAD, "--models 'ghost' matches no sample"),
    _row("export --store good.db --task math", BAD, "--task 'math' matches no sample"),
    _row("export --store empty.db --split test", BAD, "--split 'test' matches no sample"),
    _row("export --store good.db --split dev", USAGE, "argument --split: invalid choice"),
    _row("export --store good.db --models a,", USAGE, "argument --models"),
    # --- status
    _row("status --store absent.db", BAD, "absent.db: no such store"),
    _row("status --store folder", USAGE, "argument --store: 'folder' is a folder"),
    _row("status --store notes.txt", BAD, "notes.txt: ", "not a sample store"),
    _row("status --store damaged.db", BAD, "damaged.db: ", "malformed"),
    # --- eval
    _row("eval --store good.db --seed -1", USAGE, "argument --seed: expected an integer from 0"),
    _row("eval --store good.db --seed 1.5", USAGE, "argument --seed: expected an integer from 0"),
    _row("eval --store good.db --seed 4294967296", USAGE, "argument --seed"),
    _row("eval --store good.db --trials 0", USAGE, "argument --trials: expected an integer from 1"),
    _row("eval --store good.db --trials 1e9", USAGE, "argument --trials"),
    _row("eval --store good.db --trials 99999999", USAGE, "argument --trials"),
    _row("eval --store good.db --k 0", USAGE, "argument --k: expected an integer from 1"),
    _row("eval --store good.db --k -3", USAGE, "argument --k"),
    _row("eval --store good.db --k " + "9" * 5000, USAGE, "argument --k"),
    _row("eval --store good.db --k 3", BAD, "k=3 but model"),
    _row("eval --store good.db --models a,a", USAGE, "model 'a' is named twice"),
    _row("eval --store good.db --models ,", USAGE, "argument --models"),
    _row("eval --store good.db --models a,ghost", BAD, "unknown model 'ghost'"),
    _row("eval --store good.db --task math", BAD, "no samples of task 'math'"),
    _row("eval --store good.db --task nope", USAGE, "argument --task: unknown task 'nope'"),
    _row("eval --store good.db --task exact,nope", USAGE, "unknown task 'nope'"),
    _row("eval --store good.db --task exact,exact", USAGE, "task 'exact' is named twice"),
    _row("eval --store absent.db", BAD, "absent.db: no such store", subprocess=SUBPROCESS),
    _row("eval --store empty.db", BAD, "empty.db: the store is empty"),
    _row("eval --store damaged.db", BAD, "damaged.db: ", "malformed"),
    _row("eval --store folder", USAGE, "argument --store: 'folder' is a folder"),
    # --- search
    _row("search --store good.db --lambda nan", USAGE, "argument --lambda: expected a finite"),
    _row("search --store good.db --lambda inf", USAGE, "argument --lambda"),
    _row("search --store good.db --lambda=-inf", USAGE, "argument --lambda"),
    _row("search --store good.db --lambda 1e999", USAGE, "argument --lambda"),
    _row("search --store good.db --lambda -0.5", USAGE, "argument --lambda"),
    _row("search --store good.db --lambda one", USAGE, "argument --lambda"),
    _row("search --store good.db --max-models 0", USAGE, "argument --max-models"),
    _row("search --store good.db --max-models 1001", USAGE, "argument --max-models"),
    _row("search --store good.db --models ghost", BAD, "unknown model 'ghost'"),
    _row("search --store empty.db", BAD, "empty.db: the store is empty"),
    # --- scale
    _row("scale --store good.db --out notes.txt", USAGE, "'notes.txt' is a file, not a folder"),
    _row("scale --store good.db --out notes.txt/plots", USAGE, "notes.txt is not a folder"),
    _row("scale --store good.db --seed -1", USAGE, "argument --seed"),
    _row("scale --store good.db --lambda nan", USAGE, "argument --lambda"),
    _row("scale --store good.db --models ghost", BAD, "unknown model 'ghost'"),
    _row("scale --store good.db --task gsm8k", BAD, "no samples of task 'gsm8k'"),
    # --- report
    _row("report --store good.db --out notes.txt", USAGE, "'notes.txt' is a file, not a folder"),
    _row("report --store good.db --out ''", USAGE, "argument --out"),
    _row("report --store good.db --trials -2", USAGE, "argument --trials"),
    _row("report --store good.db --models ghost", BAD, "unknown model 'ghost'"),
    _row("report --store absent.db", BAD, "absent.db: no such store"),
    # --- collect (the pool's models are served: none may be asked anything)
    _row("collect --pool pool.yaml --task nope --store new.db", USAGE, "argument --task"),
    _row("collect --pool pool.yaml --task arith --store new.db --samples 0", USAGE, "--samples"),
    _row("collect --pool pool.yaml --task arith --store new.db --limit 0", USAGE, "--limit"),
    _row("collect --pool pool.yaml --task arith --store new.db --limit x", USAGE, "--limit"),
    _row("collect --pool pool.yaml --task arith --store folder", USAGE, "'folder' is a folder"),
    _row("collect --pool pool.yaml --task arith --store new.db --split dev", USAGE, "--split"),
    _row("collect --pool absent.yaml --task arith --store new.db", BAD, "absent.yaml: cannot read"),
    _row("collect --pool folder --task arith --store new.db", BAD, "folder: "),
    _row("collect --pool broken.yaml --task arith --store new.db", BAD, "broken.yaml:2: "),
    _row("collect --pool binary.yaml --task arith --store new.db", BAD, "binary.yaml: "),
    _row(
        "collect --pool pool.yaml --task arith --store new.db --models ghost", BAD, "model 'ghost'"
    ),
    _row("collect --pool pool.yaml --task gsm8k --store new.db", BAD, "needs --data"),
    _row("collect --pool pool.yaml --task custom --store new.db", BAD, "needs --data"),
    _row(
        "collect --pool pool.yaml --task gsm8k --store new.db --data absent.jsonl",
        BAD,
        "absent.jsonl: no such file",
    ),
    _row(
        "collect --pool pool.yaml --task gsm8k --store new.db --data no-questions.jsonl",
        BAD,
        "no-questions.jsonl: no questions",
    ),
    _row(
        "collect --pool pool.yaml --task gsm8k --store notes.txt --data questions.jsonl",
        BAD,
        "notes.txt: ",
        "not a sample store",
        subprocess=SUBPROCESS,
    ),
    # --- run
    _row("run --pool pool.yaml --task arith --store new.db --seed -1", USAGE, "argument --seed"),
    _row("run --pool pool.yaml --task arith --store new.db --trials 0", USAGE, "--trials"),
    _row("run --pool pool.yaml --task arith --store new.db --k 1001", USAGE, "argument --k"),
    _row(
        "run --pool pool.yaml --task gsm8k --store new.db --data absent.jsonl",
        BAD,
        "absent.jsonl: no such file",
    ),
    _row(
        "run --pool pool.yaml --task gsm8k --store new.db"
        " --validation-data questions.jsonl --data absent.jsonl",
        BAD,
        "absent.jsonl: no such file",
    ),
    # --- ask
    _row("ask '' --pool pool.yaml", USAGE, "argument question: the question is empty"),
    _row("ask '  \t' --pool pool.yaml", USAGE, "the question is empty", subprocess=SUBPROCESS),
    _row("ask 1+1 --pool pool.yaml --task custom", USAGE, "argument --task: invalid choice"),
    _row("ask 1+1 --pool pool.yaml --k 0", USAGE, "argument --k"),
    _row("ask 1+1 --pool pool.yaml --store folder", USAGE, "'folder' is a folder"),
    _row("ask 1+1 --pool pool.yaml --store absent.db", BAD, "absent.db: no such store"),
    _row("ask 1+1 --pool pool.yaml --store damaged.db", BAD, "damaged.db: ", "malformed"),
    _row("ask 1+1 --pool absent.yaml", BAD, "absent.yaml: cannot read"),
    _row("ask 1+1 --pool pool.yaml --models ghost", BAD, "unknown model 'ghost'"),
    # --- demo (the bundled models must not even be loaded)
    _row("demo --seed -1", USAGE, "argument --seed", subprocess=SUBPROCESS),
    _row("demo --questions 0", USAGE, "argument --questions"),
    _row("demo --questions 5001", USAGE, "argument --questions"),
    _row("demo --validation-questions -1", USAGE, "argument --validation-questions"),
    _row("demo --samples 0", USAGE, "argument --samples"),
    _row("demo --trials 0", USAGE, "argument --trials"),
    _row("demo --k 4 --samples 3", BAD, "--k 4 is larger than --samples 3"),
    _row("demo --out notes.txt", USAGE, "'notes.txt' is a file, not a folder"),
    _row("demo --models-dir absent", BAD, "absent: no bundled models"),
]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``slm-mux argv`` run in this process."""
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _run_subprocess(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``python -m slm_mux argv`` run in ``cwd``."""
    done = subprocess.run(
        [sys.executable, "-m", "slm_mux", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(("argv", "status", "fragments", "in_subprocess"), ROWS)
def test_bad_input_is_one_line_and_changes_nothing(
    argv: str,
    status: int,
    fragments: tuple[str, ...],
    in_subprocess: bool,
    world: Path,
    served: tuple[str, FakeServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, server = served
    monkeypatch.chdir(world)
    before = _snapshot(world)
    requests = server.request_count
    args = shlex.split(argv)
    if in_subprocess:
        code, out, err = _run_subprocess(args, world)
    else:
        code, out, err = _run(args, capsys)
    assert (code, out) == (status, ""), err
    assert err.startswith("slm-mux: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert all(fragment in err for fragment in fragments), err
    assert "Traceback" not in err
    assert _snapshot(world) == before  # nothing written, no store or folder created
    assert server.request_count == requests  # no model was asked anything
