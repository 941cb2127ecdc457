"""Live collection: streamed commits, one runner, stderr progress, cached n, custom types."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from slm_mux.backends.scripted import ScriptedConfig
from slm_mux.cli import main
from slm_mux.collect import collect_pool
from slm_mux.errors import FormatError, InputError
from slm_mux.pool import load_pool, pool_from_dict
from slm_mux.progress import RecordedProgress
from slm_mux.sample import Split
from slm_mux.store import Store
from slm_mux.tasks.loading import QuestionSet, load_question_set
from slm_mux.testing.fake_server import FakeServerConfig, Fault, run_fake_server


def _numbers(model: str, prompt: str, seed: int | None, index: int) -> str:
    number = int(prompt.split("What is ")[1].split(" ")[0]) if "What is " in prompt else 0
    return f"#### {2 * number}"


def _questions(path: Path, count: int, prefix: str = "q") -> Path:
    rows = [
        {"id": f"{prefix}{i}", "question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _openai_pool(path: Path, base_url: str, names: list[str], extra: str = "") -> Path:
    lines = ["defaults: {k: 3}", "models:"]
    for name in names:
        lines += [
            f"  - name: {name}",
            "    backend: openai",
            f"    base_url: {base_url}",
            f"    model: {name}",
            *([f"    {extra}"] if extra else []),
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(*argv: str, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slm_mux", *argv],
        text=True,
        check=False,
        timeout=120,
        **options,
    )


# ------------------------------------------------------------ streaming commits


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_a_kill_loses_no_more_samples_than_were_in_flight_when_n_is_ignored(
    tmp_path: Path,
) -> None:
    """Each single-request top-up is committed as it arrives, not when its question is done."""
    data = _questions(tmp_path / "q.jsonl", 30)
    db = tmp_path / "s.db"
    config = FakeServerConfig(answers={"*": _numbers}, honour_n=False, latency_s=0.05)
    with run_fake_server(config) as (base_url, server):
        pool = _openai_pool(tmp_path / "pool.yaml", base_url, ["solo"], "max_concurrency: 2")
        argv = [sys.executable, "-m", "slm_mux", "collect", "--pool", str(pool), "--task",
                "gsm8k", "--data", str(data), "--store", str(db), "--samples", "10",
                "--quiet"]  # fmt: skip
        victim = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.answered < 25:
            time.sleep(0.01)
        answered = server.answered  # received by the client, or about to be
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        with Store(db) as store:
            stored = store.count()
    assert 25 <= answered < 30 * 10, "the kill should land mid-run"
    # Only answers on their way to a commit (about one per connection, two here) may be
    # lost; committing whole questions would store a multiple of 10, losing 5 or more.
    assert answered - stored <= 4, (answered, stored)


def test_a_failing_top_up_keeps_the_samples_that_arrived(tmp_path: Path) -> None:
    config = FakeServerConfig(answers={"*": _numbers}, honour_n=False)
    with run_fake_server(config) as (base_url, server):
        pool = _openai_pool(
            tmp_path / "pool.yaml", base_url, ["solo"], "max_concurrency: 1\n    max_retries: 0"
        )
        data = _questions(tmp_path / "q.jsonl", 1)
        # The n-request answers one sample, the first top-up another, the second fails.
        server.faults.push(Fault.slow(0), Fault.slow(0), Fault.error(400, "bad"))
        result = _cli("collect", "--pool", str(pool), "--task", "gsm8k", "--data", str(data),
                      "--store", str(tmp_path / "s.db"), "--quiet",
                      capture_output=True)  # fmt: skip
    assert result.returncode == 3, result.stderr
    with Store(tmp_path / "s.db") as store:
        assert sorted(s.sample for s in store.samples()) == [0, 1]


# ------------------------------------------------------- stdout, stderr, progress


def test_run_json_on_stdout_stays_valid_json_with_progress_on(tmp_path: Path) -> None:
    with run_fake_server(FakeServerConfig(answers={"*": _numbers})) as (base_url, _):
        pool = _openai_pool(tmp_path / "pool.yaml", base_url, ["a", "b"])
        out = tmp_path / "r.json"
        with out.open("w") as stdout:
            result = _cli("run", "--pool", str(pool), "--task", "gsm8k", "--data",
                          str(_questions(tmp_path / "t.jsonl", 4)), "--store",
                          str(tmp_path / "s.db"), "--json", stdout=stdout,
                          stderr=subprocess.PIPE)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["methods"]["slm-mux"]["accuracy"] == 1.0
    assert "collecting test (gsm8k): 4 questions" in result.stderr


def test_collection_reports_phases_rows_and_replica_details_to_its_sink(
    tmp_path: Path,
) -> None:
    """Per model: a row advanced by samples, tokens and failed questions; replica counters
    as the row's detail; one phase per split and task."""
    data = _questions(tmp_path / "q.jsonl", 4)
    config = FakeServerConfig(answers={"a": _numbers})
    with run_fake_server(config) as (url, _), run_fake_server(config) as (url2, _):
        pool_file = tmp_path / "pool.yaml"
        pool_file.write_text(
            "defaults: {k: 3}\nmodels:\n"
            f"  - {{name: a, backend: openai, model: a, base_urls: [{url}, {url2}]}}\n"
            f"  - {{name: ghost, backend: openai, model: ghost, base_url: {url}, max_retries: 0}}\n"
        )
        plan: dict[Split, QuestionSet] = {
            "test": load_question_set("gsm8k", str(data), split="test")
        }
        sinks = [RecordedProgress(), RecordedProgress()]
        for sink in sinks:
            collect_pool(load_pool(pool_file), plan, store=tmp_path / "s.db", progress=sink)
    first, again = sinks
    assert first.phases == again.phases == ["collecting test (gsm8k): 4 questions"]
    a, ghost = first.rows
    assert (a.name, a.total, a.done, a.errors) == ("a", 12, 12, 0)
    assert a.tokens > 0
    assert a.details[-1].startswith("req ") and " err 0 0 cool 0 0" in a.details[-1]
    assert (ghost.name, ghost.total, ghost.done, ghost.errors) == ("ghost", 12, 0, 4)
    assert ghost.details == [""] * 5  # one server: no replica counters
    a, ghost = again.rows  # the stored samples count as done from the start
    assert (a.done, a.tokens, ghost.done, ghost.errors) == (12, 0, 0, 4)


# ------------------------------------------------------------------ one runner


def test_run_builds_each_backend_once_for_both_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    original = ScriptedConfig.build

    def counting(self: ScriptedConfig) -> Any:
        built.append(self.name)
        return original(self)

    monkeypatch.setattr(ScriptedConfig, "build", counting)
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "models:\n"
        '  - {name: a, backend: scripted, script: {"*": ["#### 2"]}}\n'
        '  - {name: b, backend: scripted, script: {"*": ["#### 3"]}}\n'
    )
    code = main(["run", "--pool", str(pool), "--task", "arith", "--limit", "3",
                 "--store", str(tmp_path / "s.db"), "--samples", "2", "--k", "1",
                 "--quiet", "--json"])  # fmt: skip
    assert code == 0
    assert built == ["a", "b"]
    with Store(tmp_path / "s.db") as store:
        assert store.count(split="validation") == store.count(split="test") == 2 * 3 * 2


def test_collect_samples_defaults_to_the_pools_k_and_can_differ(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "defaults: {k: 2}\nmodels:\n"
        '  - {name: a, backend: scripted, script: {"*": ["#### 2"]}}\n'
        '  - {name: b, backend: scripted, k: 4, script: {"*": ["#### 2"]}}\n'
    )
    common = ["collect", "--pool", str(pool), "--task", "arith", "--limit", "2", "--store",
              str(tmp_path / "s.db"), "--quiet"]  # fmt: skip
    assert main(common) == 0
    assert _per_model(tmp_path / "s.db") == {"a": 2 * 2, "b": 2 * 4}
    assert main([*common, "--samples", "5"]) == 0
    assert _per_model(tmp_path / "s.db") == {"a": 2 * 5, "b": 2 * 5}


def _per_model(db: Path) -> dict[str, int]:
    with Store(db) as store:
        models = [s.model for s in store.samples()]
    return {name: models.count(name) for name in sorted(set(models))}


# ------------------------------------------------------- ask and n support


def test_what_a_process_learns_about_n_saves_the_next_one_a_round_trip(tmp_path: Path) -> None:
    config = FakeServerConfig(answers={"*": _numbers}, honour_n=False)
    with run_fake_server(config) as (base_url, server):
        pool = _openai_pool(tmp_path / "pool.yaml", base_url, ["solo"])
        ask = ["ask", "What is 2 + 2?", "--pool", str(pool), "--task", "gsm8k", "--json"]
        for run in range(2):  # two short replies in a row: consistent evidence
            first = _cli(*ask, capture_output=True)
            assert first.returncode == 0, first.stderr
            asked_n = [r.body.get("n") for r in server.requests[3 * run :]]
            assert sorted(asked_n, key=str) == [3, None, None]  # n=3 got 1 choice; 2 top-ups
        second = _cli(*ask, capture_output=True)
        assert second.returncode == 0, second.stderr
        assert [r.body.get("n") for r in server.requests[6:]] == [None, None, None]
    assert json.loads(second.stdout)["answer"] == "4"
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "slm-mux" / "endpoints.json"
    learned = json.loads(cache.read_text())[f"{base_url} solo"]
    assert (learned["supports_n"], learned["refusals"]) == (False, 2)


# --------------------------------------------------------------- pool files


def test_a_yaml_key_written_twice_is_an_error_with_its_line(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "models:\n  - name: a\n    backend: scripted\n    script: {'*': [x]}\n"
        "    temperature: 0.1\n    temperature: 0.9\n"
    )
    with pytest.raises(FormatError) as caught:
        load_pool(pool)
    assert str(caught.value) == f"{pool}:6: duplicate key 'temperature'"


def test_settings_hashes_of_existing_pools_are_unchanged() -> None:
    """Stores written before the per-backend pool entries hold these hashes."""
    pool = pool_from_dict(
        {
            "defaults": {"temperature": 0.5, "seed": 3},
            "models": [
                {"name": "q", "backend": "openai", "base_url": "http://h/v1", "model": "m"},
                {"name": "t", "backend": "transformers", "path": "/abs/tiny", "dtype": "float16"},
                {"name": "s", "backend": "scripted", "script": {"*": ["a", "b"]}},
            ],
        }
    )
    assert [m.settings_hash(pool.defaults) for m in pool.models] == [
        "3cd9c03c70793000b340cbc816656377b5469d4f8b99f48e9fcfb37addb01068",
        "8ef1d8530761002da2ba2e75fd576f9e30bd092e928614346284412b68ce9633",
        "476df6f4dcf7037abb836d396e9aa6e7b64a17c4c0f0d393c208566a550b4a21",
    ]


# ------------------------------------------------------------ question sets


def test_custom_lines_of_several_types_are_stored_under_their_graders(tmp_path: Path) -> None:
    data = tmp_path / "custom.jsonl"
    rows = [
        {"id": "m", "question": "Half of one?", "reference": r"\frac{1}{2}", "type": "math"},
        {"id": "g", "question": "Two and two?", "reference": "4", "type": "gsm8k"},
        {"id": "e", "question": "Say yes", "reference": "yes"},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "models:\n  - name: a\n    backend: scripted\n    script:\n"
        '      "Half": ["\\\\boxed{0.5}"]\n      "Two": ["#### 4"]\n      "*": ["yes"]\n'
    )
    assert main(["collect", "--pool", str(pool), "--task", "custom", "--data", str(data),
                 "--store", str(tmp_path / "s.db"), "--quiet"]) == 0  # fmt: skip
    with Store(tmp_path / "s.db") as store:
        samples = store.samples()
    assert {(s.task, s.question_id) for s in samples} == {
        ("math", "m"),
        ("gsm8k", "g"),
        ("exact", "e"),
    }
    assert all(s.correct for s in samples)


def test_the_unknown_task_message_lists_custom() -> None:
    with pytest.raises(InputError) as caught:
        load_question_set("maths", None, split="test")
    assert str(caught.value) == (
        "unknown task 'maths'; choose from arith, custom, exact, gpqa, gsm8k, math"
    )


def test_an_empty_question_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "What?", "answer": "1"}\n{"question": " ", "answer": "2"}\n')
    with pytest.raises(FormatError) as caught:
        load_question_set("exact", str(data), split="test")
    assert str(caught.value) == f"{data}:2: 'question' must be a non-empty string"
