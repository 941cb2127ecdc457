"""`collect --adaptive`: joint rounds per question, a stored prefix, resumes that redraw nothing,
and `compare --adaptive`'s live row."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.test_adaptive_live import MODELS, by_seed, write_pool

from slm_mux.adaptive import Policy
from slm_mux.calls import sample_seed
from slm_mux.cli import main
from slm_mux.engine import drawn_codes
from slm_mux.selection import tie_break_rank
from slm_mux.store import Store
from slm_mux.tasks import get_task
from slm_mux.testing.fake_server import FakeServer, FakeServerConfig, run_fake_server

K = 5
QUESTIONS = 12


@pytest.fixture
def server() -> Iterator[tuple[str, FakeServer]]:
    with run_fake_server(FakeServerConfig(answers={"*": by_seed})) as running:
        yield running


def question_file(path: Path) -> Path:
    rows = [
        {"id": f"q{i}", "question": f"Question {i}: what is six times seven?", "answer": "42"}
        for i in range(QUESTIONS)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def drawn_numbers(fake: FakeServer) -> list[tuple[str, str, int]]:
    """(model, question id, sample number) of every sample the server was asked for."""
    found = []
    for request in fake.requests:
        text = request.body["messages"][-1]["content"]
        qid = "q" + text.split("Question ")[1].split(":")[0]
        first = request.body["seed"] - sample_seed(0, qid, 0)
        found += [(request.body["model"], qid, first + j) for j in range(request.body.get("n", 1))]
    return found


def stored(db: Path) -> dict[tuple[str, str, int], str | None]:
    with Store(db) as store:
        return {(s.model, s.question_id, s.sample): s.answer for s in store.samples()}


def test_collect_stores_a_prefix_and_a_resume_draws_nothing_twice(
    tmp_path: Path, server: tuple[str, FakeServer], capsys: pytest.CaptureFixture[str]
) -> None:
    url, fake = server
    pool = write_pool(tmp_path / "pool.yaml", url, k=K)
    db = tmp_path / "s.db"
    argv = ["collect", "--pool", str(pool), "--task", "gsm8k", "--store", str(db), "--quiet"]
    argv += ["--data", str(question_file(tmp_path / "q.jsonl")), "--adaptive", "exact"]
    assert main(argv) == 0
    first = stored(db)
    asked = drawn_numbers(fake)
    assert sorted(asked) == sorted(first)  # every sample drawn once, every one stored
    assert len(first) < QUESTIONS * len(MODELS) * K
    err = capsys.readouterr().err
    assert f"adaptive exact: {len(first)} of {QUESTIONS * len(MODELS) * K} samples stored" in err
    task, rank = get_task("gsm8k"), [int(r) for r in tie_break_rank([None] * 3)]
    for i in range(QUESTIONS):
        rows = []
        for model in MODELS:
            numbers = sorted(n for m, q, n in first if (m, q) == (model, f"q{i}"))
            assert numbers == list(range(len(numbers)))  # a prefix of the stream
            rows.append([first[(model, f"q{i}", n)] for n in numbers])
        assert not any(Policy.parse("exact").next_round(drawn_codes(rows, task), [K] * 3, rank))

    # A finished collection asks for nothing more.
    fake.requests.clear()
    assert main(argv) == 0
    assert fake.request_count == 0

    # Lose every sample after round 1 (as a kill would): the resume replays the stored
    # prefix and draws exactly the lost samples again, so the store comes out the same.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM samples WHERE sample >= ?", (K // 2 + 1,))
    lost = set(first) - set(stored(db))
    assert lost
    assert main(argv) == 0
    assert sorted(drawn_numbers(fake)) == sorted(lost)
    assert stored(db) == first


def test_a_failed_model_is_retried_on_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = FakeServerConfig(answers={"steady": by_seed, "shaky": by_seed})  # wild: 404
    with run_fake_server(config) as (url, _):
        pool = write_pool(tmp_path / "pool.yaml", url, k=K, adaptive="exact")
        db = tmp_path / "s.db"
        data = question_file(tmp_path / "q.jsonl")
        argv = ["collect", "--pool", str(pool), "--task", "gsm8k", "--store", str(db)]
        argv += ["--data", str(data), "--quiet", "--limit", "3"]
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert "wild: 0 new samples, 0 already stored, 3 failed questions" in err
        with Store(db) as store:
            assert {f.model for f in store.failures()} == {"wild"}
    with run_fake_server(FakeServerConfig(answers={"*": by_seed})) as (url, fake):
        write_pool(tmp_path / "pool.yaml", url, k=K, adaptive="exact")
        assert main(argv) == 0
        with Store(db) as store:
            assert store.failures() == []
        assert {m for m, _, _ in drawn_numbers(fake)} >= {"wild"}


def test_compare_adds_a_live_adaptive_slm_mux_row(
    tmp_path: Path, server: tuple[str, FakeServer], capsys: pytest.CaptureFixture[str]
) -> None:
    url, fake = server
    pool = write_pool(tmp_path / "pool.yaml", url, k=K)
    db = tmp_path / "c.db"
    argv = ["compare", "--pool", str(pool), "--task", "gsm8k", "--store", str(db), "--quiet"]
    argv += ["--data", str(question_file(tmp_path / "q.jsonl")), "--json"]
    argv += ["--methods", "slm-mux", "--adaptive", "exact"]
    assert main(argv) == 0
    methods = json.loads(capsys.readouterr().out)["methods"]
    assert list(methods) == ["slm-mux", "slm-mux@exact"]
    full, exact = methods["slm-mux"], methods["slm-mux@exact"]
    # Same stream (sample i seeded alike), so the lossless policy answers as full does.
    assert exact["correct"] == full["correct"]
    assert full["completion_tokens"] > exact["completion_tokens"] > 0
    assert exact["calls"] > full["calls"] == QUESTIONS * len(MODELS)
    # A re-run replays every recorded call: no request.
    fake.requests.clear()
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["methods"] == methods
    assert fake.request_count == 0
