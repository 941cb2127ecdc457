"""A model whose replies are mostly empty or unreadable is named (issue 19 §3): the rule,
then collect, ask, serve and compare each warn once, naming the model and a reply."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.server.helpers import running, scripted_pool

from slm_mux.backends.scripted import Script
from slm_mux.cli import main
from slm_mux.reply_health import SAMPLE_CHARS, ReplyHealth
from slm_mux.server import create_app
from slm_mux.tasks import get_task
from slm_mux.testing import FakeServerConfig, run_fake_server

EMPTY_WARNING = "model 'gemma': 3 of 3 replies are empty ('')"
"""What a model answering every one of 3 samples with an empty text is told (k = 3)."""


def test_the_rule_counts_empty_and_unreadable_replies_and_quotes_one() -> None:
    health = ReplyHealth()
    health.add("a", ["", " ", "Answer: 4"], ["", None, "4"])  # 2 of 3 empty
    health.add("b", ["x" * 200, "Answer: 4", "Answer: 4", "Answer: 4"], [None, "4", "4", "4"])
    health.add("c", ["", "no idea", "Answer: 4", "?"], [None, None, "4", None])
    health.add("d", ["", ""])  # too few replies to judge
    health.add("e", ["free text", "more", "and more"])  # nothing reads them: not unreadable
    assert health.problems() == {
        "a": "2 of 3 replies are empty ('')",
        "c": "3 of 4 replies are empty (1) or have no answer the task can read (2), e.g. 'no idea'",
    }
    health.add("b", ["y", "z"], [None, None])  # now 3 of 6
    quoted = repr("x" * (SAMPLE_CHARS - 1) + "…")
    assert health.problems()["b"] == (
        f"3 of 6 replies have no answer the task can read, e.g. {quoted}"
    )


def test_each_model_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    health = ReplyHealth()
    with caplog.at_level(logging.WARNING, "slm_mux"):
        for _ in range(3):
            health.add("m", ["", "", ""])
            health.warn()
    assert [r.getMessage() for r in caplog.records] == [
        "model 'm': 3 of 3 replies are empty (''); check its chat template, prompt and "
        "answer format"
    ]


def _pool(tmp_path: Path, script: dict[str, Any]) -> str:
    path = tmp_path / "pool.yaml"
    models = [{"name": name, "backend": "scripted", "script": s} for name, s in script.items()]
    path.write_text(yaml.safe_dump({"defaults": {"k": 3}, "models": models}))
    return str(path)


SCRIPT: dict[str, Script] = {"qwen": {"*": ["Answer: 4"]}, "gemma": {"*": [""]}}


def test_ask_json_warns_about_a_model_whose_replies_are_all_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", "What is 2+2?", "--pool", _pool(tmp_path, SCRIPT), "--json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["votes"] == {"qwen": {"4": 3}, "gemma": {}}
    assert f"slm-mux: warning: {EMPTY_WARNING}" in printed.err
    assert "qwen" not in printed.err


def test_collect_warns_about_a_model_behind_a_server_that_answers_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = {"gemma": lambda *_: "", "qwen": lambda *_: "Answer: 4"}
    with run_fake_server(FakeServerConfig(answers=answers)) as (url, _):
        pool = tmp_path / "pool.yaml"
        entries = [{"name": m, "backend": "openai", "base_url": url, "model": m} for m in answers]
        pool.write_text(yaml.safe_dump({"defaults": {"k": 3}, "models": entries}))
        data = tmp_path / "q.jsonl"
        data.write_text(json.dumps({"id": "q1", "question": "2+2?", "answer": "4"}) + "\n")
        argv = ["collect", "--pool", str(pool), "--task", "exact", "--data", str(data)]
        assert main([*argv, "--store", str(tmp_path / "s.db"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"slm-mux: warning: {EMPTY_WARNING}" in err
    assert err.count("slm-mux: warning:") == 1


def test_serve_logs_the_warning_once(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(scripted_pool(SCRIPT), task=get_task("exact"))
    request = {"model": "slm-mux", "messages": [{"role": "user", "content": "2+2?"}]}
    passed = {"model": "gemma", "messages": [{"role": "user", "content": "2+2?"}], "n": 3}
    with caplog.at_level(logging.WARNING, "slm_mux"), running(app) as url:
        for body in (request, request, passed):
            assert httpx.post(f"{url}/chat/completions", json=body).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "replies" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(EMPTY_WARNING)


def test_serve_counts_a_pass_through_reply_by_its_emptiness(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(scripted_pool(SCRIPT), task=get_task("exact"))
    passed = {"model": "gemma", "messages": [{"role": "user", "content": "2+2?"}], "n": 3}
    with caplog.at_level(logging.WARNING, "slm_mux"), running(app) as url:
        assert httpx.post(f"{url}/chat/completions", json=passed).status_code == 200
    assert EMPTY_WARNING in caplog.text


def test_compare_warns_about_a_model_whose_samples_are_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = {"qwen": {"*": ["#### 4"]}, "gemma": {"*": ["I think it is four."]}}
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"id": "q1", "question": "2+2?", "answer": "#### 4"}) + "\n")
    argv = ["compare", "--pool", _pool(tmp_path, script), "--task", "gsm8k", "--data", str(data)]
    main([*argv, "--store", str(tmp_path / "s.db"), "--methods", "slm-mux", "--quiet"])
    err = capsys.readouterr().err
    assert (
        "slm-mux: warning: model 'gemma': 3 of 3 replies have no answer the task can read, "
        "e.g. 'I think it is four.'"
    ) in err
