"""A resumed adaptive collection reaches exactly the state an uninterrupted one reaches.

A run interrupted after any number of stored samples (a kill loses the samples in flight,
possibly part of one request's batch), or a run over some of the models first, leaves a
store that the next run completes: the policy is replayed over the stored samples from
its first round, and only the samples it asks for that are not stored are drawn.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from tests.test_adaptive_live import MODELS, by_seed, write_pool
from tests.test_adaptive_live_collect import question_file, stored

from slm_mux.cli import main
from slm_mux.sample import Sample
from slm_mux.store import Store
from slm_mux.testing.fake_server import FakeServerConfig, run_fake_server

K = 5


class Killed(BaseException):
    """Stands for ``kill -9``: nothing catches it, nothing after it runs."""


@pytest.fixture
def url() -> Iterator[str]:
    with run_fake_server(FakeServerConfig(answers={"*": by_seed})) as (running, _):
        yield running


def collect(url: str, tmp_path: Path, db: Path, *extra: str) -> int:
    pool = write_pool(tmp_path / "pool.yaml", url, k=K)
    argv = ["collect", "--pool", str(pool), "--task", "gsm8k", "--store", str(db), "--quiet"]
    argv += ["--data", str(question_file(tmp_path / "q.jsonl")), "--adaptive", "exact", *extra]
    return main(argv)


def uninterrupted(url: str, tmp_path: Path) -> dict[tuple[str, str, int], str | None]:
    db = tmp_path / "whole.db"
    assert collect(url, tmp_path, db) == 0
    return stored(db)


def kill_after(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """Make the store take ``limit`` samples in all (part of a batch, if it comes to that),
    then die."""
    add = Store.add
    taken = [0]

    def add_then_die(self: Store, samples: Iterable[Sample]) -> int:
        batch = list(samples)
        room = limit - taken[0]
        taken[0] += add(self, batch[:room])
        if len(batch) > room:
            raise Killed
        return len(batch)

    monkeypatch.setattr(Store, "add", add_then_die)


def test_a_run_killed_after_any_number_of_samples_resumes_to_the_same_store(
    tmp_path: Path, url: str
) -> None:
    whole = uninterrupted(url, tmp_path)
    for limit in [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, len(whole) - 1]:
        db = tmp_path / f"killed-{limit}.db"
        with pytest.MonkeyPatch.context() as patch:
            kill_after(patch, limit)
            with pytest.raises(Killed):
                collect(url, tmp_path, db)
        assert len(stored(db)) == limit
        assert collect(url, tmp_path, db) == 0
        assert stored(db) == whole, f"killed after {limit} samples"


def test_a_run_of_one_model_first_then_all_models_completes_the_joint_collection(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = uninterrupted(url, tmp_path)
    db = tmp_path / "split.db"
    assert collect(url, tmp_path, db, "--models", MODELS[0]) == 0
    assert collect(url, tmp_path, db) == 0
    resumed = stored(db)
    # The one-model run may have drawn samples the joint policy never asks for; every
    # sample of the uninterrupted run is there, the same.
    assert {key: resumed[key] for key in whole} == whole
    assert {key for key in resumed if key[0] != MODELS[0]} == {
        key for key in whole if key[0] != MODELS[0]
    }
    capsys.readouterr()
    # A further run adds nothing, and the store evaluates as the uninterrupted one does.
    assert collect(url, tmp_path, db) == 0
    assert " 0 new samples" in capsys.readouterr().err
    assert stored(db) == resumed

    def evaluated(store: Path) -> dict[str, object]:
        argv = ["eval", "--store", str(store), "--task", "gsm8k", "--json"]
        assert main([*argv, "--adaptive", "exact", "--k", str(K)]) == 0
        methods: dict[str, object] = json.loads(capsys.readouterr().out)["methods"]
        return methods

    assert evaluated(db)["slm-mux@exact"] == evaluated(tmp_path / "whole.db")["slm-mux@exact"]


def stored_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
    except sqlite3.OperationalError:  # not made yet
        return 0


@pytest.mark.skipif(os.name != "posix", reason="kill -9")
def test_a_collection_killed_with_kill_9_resumes_to_the_same_store(tmp_path: Path) -> None:
    # A server that answers one sample per request, slowly: kills land mid-round.
    config = FakeServerConfig(answers={"*": by_seed}, honour_n=False, latency_s=0.01)
    with run_fake_server(config) as (url, _):
        whole = uninterrupted(url, tmp_path)
        for limit in (5, len(whole) // 2):
            db = tmp_path / f"killed-{limit}.db"
            pool = write_pool(tmp_path / "pool.yaml", url, k=K)
            argv = ["collect", "--pool", str(pool), "--task", "gsm8k", "--store", str(db)]
            argv += ["--data", str(question_file(tmp_path / "q.jsonl")), "--quiet"]
            running = subprocess.Popen(
                [sys.executable, "-m", "slm_mux", *argv, "--adaptive", "exact"]
            )
            try:
                while stored_count(db) < limit and running.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        running.wait(timeout=0.01)
            finally:
                running.send_signal(signal.SIGKILL)
                running.wait()
            assert limit <= stored_count(db) < len(whole), "killed too late to tell"
            assert collect(url, tmp_path, db) == 0
            assert stored(db) == whole, f"killed after {limit} samples"
