"""``slm-mux compare`` on the loopback test server: counted calls and tokens, faults, resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from slm_mux.calls import sample_seed
from slm_mux.cli import main
from slm_mux.compare import compare_pool
from slm_mux.comparison import Comparison
from slm_mux.methods import METHODS, compare_methods
from slm_mux.pool import Pool, pool_from_dict
from slm_mux.store import Store
from slm_mux.tasks import Question, get_task
from slm_mux.testing.fake_server import FakeServer, FakeServerConfig, Fault, run_fake_server

MODELS = ["good", "shaky", "wrong"]
QUESTIONS = [Question(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(6)]


def _answer(model: str, prompt: str, seed: int | None, index: int) -> str:
    """Deterministic replies: good is right, wrong is off by one, shaky alternates."""
    found = re.search(r"What is (\d+)", prompt)
    right = 2 * int(found.group(1)) if found else 0
    if model == "good" or (model == "shaky" and ((seed or 0) + index) % 2):
        return f"The sum is {right}. #### {right}"
    return f"#### {right + 1}"


def _pool(base_url: str, extra: dict[str, Any] | None = None) -> Pool:
    entry = {"backend": "openai", "base_url": base_url, **(extra or {})}
    return pool_from_dict(
        {"defaults": {"k": 3}, "models": [{"name": m, "model": m, **entry} for m in MODELS]}
    )


def _compare(pool: Pool, store: Path, methods: list[str] | None = None) -> Comparison:
    return compare_pool(
        pool,
        get_task("gsm8k"),
        QUESTIONS,
        store=store,
        methods=methods or compare_methods(),
    )


def _distinct_calls(result: Comparison) -> tuple[int, int, int]:
    """Requests and tokens of the run, each shared sampling counted once."""
    rows = [result.methods["slm-mux"], *(result.methods[m] for m in METHODS)]
    return (
        sum(r.calls for r in rows),
        sum(r.prompt_tokens for r in rows),
        sum(r.completion_tokens for r in rows),
    )


def _server_counts(server: FakeServer) -> tuple[int, int, int]:
    return server.responses, server.prompt_tokens, server.completion_tokens


def test_calls_and_tokens_equal_what_the_server_answered_despite_faults(tmp_path: Path) -> None:
    with run_fake_server(FakeServerConfig(answers={"*": _answer})) as (base_url, server):
        server.faults.push(
            Fault.error(500), Fault.drop_connection(), Fault.error(503), Fault.malformed_json()
        )
        result = _compare(_pool(base_url), tmp_path / "s.db")
        assert len(server.faults) == 0 and server.request_count == server.responses + 4
        assert _distinct_calls(result) == _server_counts(server)
    assert not result.failed
    # On a server that honours n, every method costs exactly its formula.
    for name, spec in METHODS.items():
        assert result.methods[name].calls == spec.calls_per_question(3, spec.settings()) * 6
    assert result.methods["oracle"].calls == 3 * 6
    assert result.methods["slm-mux"].accuracy == 1.0  # good is always sure and right
    assert result.methods["agent-forest"].accuracy < 1.0


def test_a_server_that_ignores_n_is_charged_the_requests_it_needed(tmp_path: Path) -> None:
    config = FakeServerConfig(answers={"*": _answer}, honour_n=False)
    with run_fake_server(config) as (base_url, server):
        result = _compare(_pool(base_url), tmp_path / "s.db", ["slm-mux", "mav"])
        assert _distinct_calls_of(result, ["slm-mux", "mav"]) == _server_counts(server)
    # Three requests per k=3 sample call; mav's generator asks n=4 in four requests.
    assert result.methods["slm-mux"].calls == 3 * 3 * 6
    assert result.methods["mav"].calls == (4 + 3 * 4 * 2) * 6


def _distinct_calls_of(result: Comparison, methods: list[str]) -> tuple[int, int, int]:
    rows = [result.methods[m] for m in methods]
    return (
        sum(r.calls for r in rows),
        sum(r.prompt_tokens for r in rows),
        sum(r.completion_tokens for r in rows),
    )


def test_questions_of_a_phase_go_out_together(tmp_path: Path) -> None:
    config = FakeServerConfig(answers={"*": _answer}, latency_s=0.05)
    with run_fake_server(config) as (base_url, server):
        _compare(_pool(base_url), tmp_path / "s.db", ["debate"])
        # Round 1: three agents on six questions at once.
        assert server.max_in_flight == 3 * 6


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slm_mux", *argv],
        text=True,
        capture_output=True,
        check=False,
        timeout=120,
    )


def _pool_file(path: Path, base_url: str) -> Path:
    lines = ["defaults: {k: 3}", "models:"]
    for name in MODELS:
        lines += [f"  - {{name: {name}, backend: openai, base_url: '{base_url}', model: {name}}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _data(path: Path) -> Path:
    rows = [{"id": q.id, "question": q.text, "answer": f"#### {q.reference}"} for q in QUESTIONS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_bad_roles_and_methods_fail_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with run_fake_server(FakeServerConfig(answers={"*": _answer})) as (base_url, server):
        pool = str(_pool_file(tmp_path / "pool.yaml", base_url))
        data = str(_data(tmp_path / "q.jsonl"))
        common = ["compare", "--pool", pool, "--task", "gsm8k", "--data", data,
                  "--store", str(tmp_path / "s.db"), "--quiet"]  # fmt: skip
        assert main([*common, "--aggregator", "nobody"]) == 1
        assert "--aggregator 'nobody' is not a pool model" in capsys.readouterr().err
        assert main([*common, "--generator", "ghost", "--methods", "mav"]) == 1
        assert "--generator 'ghost'" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exit_info:
            main([*common, "--methods", "slm-mux,vote"])
        assert exit_info.value.code == 2
        assert "unknown method 'vote'" in capsys.readouterr().err
        assert server.request_count == 0


def _without_wall(data: dict[str, Any]) -> dict[str, Any]:
    for row in data["methods"].values():
        row.pop("wall_s")
    return data


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_a_killed_comparison_resumes_without_repeating_a_finished_call(tmp_path: Path) -> None:
    config = FakeServerConfig(answers={"*": _answer}, latency_s=0.02)
    with run_fake_server(config) as (base_url, server):
        pool = _pool_file(tmp_path / "pool.yaml", base_url)
        db = tmp_path / "s.db"
        data = str(_data(tmp_path / "q.jsonl"))
        argv = ["compare", "--pool", str(pool), "--task", "gsm8k", "--data", data,
                "--store", str(db), "--quiet", "--json"]  # fmt: skip
        victim = subprocess.Popen(
            [sys.executable, "-m", "slm_mux", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.responses < 60:
            time.sleep(0.005)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        with Store(db) as store:
            finished = {
                (call.model, sample_seed(0, f"{qid}:{method}:{step}:{model}", 0))
                for method in ["independent", *METHODS]
                for runs in _all_calls(store, method)
                for (qid, step, model), call in runs.items()
            }
        assert 0 < len(finished) < 300, "the kill should land mid-run"
        sent_before = server.request_count
        resumed = _cli(*argv)
        assert resumed.returncode == 0, resumed.stderr
        again = [(r.body["model"], r.body.get("seed")) for r in server.requests[sent_before:]]
        assert again and not finished & set(again)
        reference = _compare(_pool(base_url), tmp_path / "fresh.db").to_json()
    assert _without_wall(json.loads(resumed.stdout)) == _without_wall(reference)


def _all_calls(store: Store, method: str) -> list[dict[tuple[str, str, str], Any]]:
    """Every config's recorded calls of ``method`` (a test reads the table directly)."""
    rows = store._conn.execute(
        "SELECT DISTINCT config_hash, task, split FROM calls WHERE method = ?", (method,)
    ).fetchall()
    return [store.calls(method, *row) for row in rows]


def test_the_report_shows_the_stored_comparison(tmp_path: Path) -> None:
    with run_fake_server(FakeServerConfig(answers={"*": _answer})) as (base_url, _):
        pool = _pool_file(tmp_path / "pool.yaml", base_url)
        data = str(_data(tmp_path / "q.jsonl"))
        db = str(tmp_path / "s.db")
        compared = _cli("compare", "--pool", str(pool), "--task", "gsm8k", "--data", data,
                        "--store", db, "--quiet", "--methods", "slm-mux,moa,sc")  # fmt: skip
        assert compared.returncode == 0, compared.stderr
        collected = _cli("collect", "--pool", str(pool), "--task", "gsm8k", "--data", data,
                         "--store", db, "--quiet")  # fmt: skip
        assert collected.returncode == 0, collected.stderr
    out = tmp_path / "report"
    reported = _cli("report", "--store", db, "--out", str(out))
    assert reported.returncode == 0, reported.stderr
    markdown = (out / "report.md").read_text()
    section = markdown.split("## Live comparison\n\n", 1)[1]
    header, _rule, *rows = compared.stdout.split("\n\n")[0].splitlines()
    assert len(rows) == 3, compared.stdout
    missing = [line for line in [header, *rows] if line not in section]
    assert not missing, (missing, section)
    assert "Live comparison" in (out / "report.html").read_text()
