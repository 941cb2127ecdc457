"""``slm-mux serve`` as a process: the demo pool answers, SIGTERM drains, bad flags fail clearly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import openai
import pytest
import yaml

from slm_mux.cli import main
from slm_mux.demo import bundled_pool_file
from slm_mux.testing import FakeServerConfig, run_fake_server

SERVING = re.compile(r"serving on (http://127\.0\.0\.1:\d+/v1)")


def _started(stderr: IO[str], lines: list[str]) -> str:
    """Read ``stderr`` until the server says where it serves; keep every line read."""
    for line in stderr:
        lines.append(line)
        found = SERVING.search(line)
        if found:
            return found.group(1)
    raise AssertionError("the server exited before serving:\n" + "".join(lines))


@contextmanager
def serving(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, Any, list[str]]]:
    """Run ``slm-mux serve ARGS --port 0``; yields (base URL, process, stderr lines so far)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "slm_mux", "serve", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        url = _started(process.stderr, lines)
        rest = threading.Thread(target=lambda: lines.extend(process.stderr or []), daemon=True)
        rest.start()
        yield url, process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_serve_on_the_demo_pool_answers_offline(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump(bundled_pool_file(k=3, temperature=0.3, seed=0)))
    with serving("--pool", str(pool), "--task", "arith") as (url, process, _):
        api = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        reply = api.chat.completions.create(
            model="slm-mux", messages=[{"role": "user", "content": "23*7+5"}]
        )
        assert [m.id for m in api.models.list()][-4:] == [
            "tiny-add",
            "tiny-generalist",
            "tiny-mul",
            "tiny-sub",
        ]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM  # uvicorn re-raises it once drained
        assert process.stdout is not None
        assert process.stdout.read() == ""
    assert reply.model_extra is not None
    selection = reply.model_extra["slm_mux"]
    assert selection["model"] in {"tiny-add", "tiny-generalist", "tiny-mul", "tiny-sub"}
    assert selection["answer"] is not None
    assert selection["failed"] == {}
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_sigterm_drains_the_request_in_flight_and_the_key_is_never_logged(
    tmp_path: Path,
) -> None:
    config = FakeServerConfig(answers={"*": lambda *_: "Answer: 42"}, latency_s=1.0)
    with run_fake_server(config) as (base, fake):
        pool = tmp_path / "pool.yaml"
        entry = {"name": "m", "backend": "openai", "base_url": base, "model": "m"}
        pool.write_text(yaml.safe_dump({"defaults": {"k": 2}, "models": [entry]}))
        secret = "tok-" + "9" * 24
        env = {"SLM_TEST_KEY": secret}
        args = ("--pool", str(pool), "--api-key-env", "SLM_TEST_KEY")
        with serving(*args, env=env) as (url, process, lines):
            api = openai.OpenAI(base_url=url, api_key=secret, max_retries=0)
            replies: list[Any] = []
            asking = threading.Thread(
                target=lambda: replies.append(
                    api.chat.completions.create(
                        model="slm-mux", messages=[{"role": "user", "content": "6*7?"}]
                    )
                )
            )
            asking.start()
            deadline = time.monotonic() + 20
            while fake.in_flight == 0:  # the mux's request has reached the model
                assert time.monotonic() < deadline, "the request never reached the model"
                time.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            asking.join(timeout=30)
            assert process.wait(timeout=30) == -signal.SIGTERM  # uvicorn re-raises it once drained
        assert fake.request_count == 1
    (reply,) = replies
    assert reply.choices[0].message.content == "Answer: 42"
    log = "".join(lines)
    assert "POST /v1/chat/completions" in log  # the access log is on stderr
    assert secret not in log


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``main(["serve", *args])`` (exit status, stderr); argparse's exit is a status too."""
    try:
        status = main(["serve", *args])
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    assert captured.out == ""
    return status, captured.err


def pool_file(tmp_path: Path) -> str:
    path = tmp_path / "pool.yaml"
    entry = {"name": "m", "backend": "scripted", "script": {"*": ["Answer: 1"]}}
    path.write_text(yaml.safe_dump({"models": [entry]}))
    return str(path)


def test_an_unset_api_key_variable_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLM_NO_SUCH_KEY", raising=False)
    status, err = run_main(
        capsys, "--pool", pool_file(tmp_path), "--api-key-env", "SLM_NO_SUCH_KEY"
    )
    assert status == 1
    assert err == "slm-mux: error: --api-key-env: environment variable SLM_NO_SUCH_KEY is not set\n"


def test_a_port_in_use_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, err = run_main(capsys, "--pool", pool_file(tmp_path), "--port", str(port))
    assert status == 1
    assert err.startswith(f"slm-mux: error: cannot listen on 127.0.0.1:{port}: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--port", "70000"], "--port"), (["--k", "0"], "--k"), (["--task", "nope"], "--task")],
)
def test_bad_flags_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    status, err = run_main(capsys, "--pool", pool_file(tmp_path), *flags)
    assert status == 2
    assert err.startswith("slm-mux: error: ") and named in err and err.count("\n") == 1


def test_a_bad_pool_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text("models:\n  - {name: m, backend: scripted, script: {x: [A]}, temprature: 1}\n")
    status, err = run_main(capsys, "--pool", str(pool))
    assert status == 1
    assert err == f"slm-mux: error: {pool}: models[0].temprature: unknown key\n"


def test_without_the_server_extra_serve_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if name.startswith("slm_mux.server"):
            monkeypatch.delitem(sys.modules, name)
        elif name.split(".")[0] in ("starlette", "uvicorn"):
            monkeypatch.setitem(sys.modules, name, None)  # as if never installed
    status, err = run_main(capsys, "--pool", str(tmp_path / "never-read.yaml"))
    assert status == 1
    assert err == (
        "slm-mux: error: serve needs Starlette and uvicorn; install them with: "
        "pip install 'slm-mux[server]'\n"
    )


def test_workers_share_the_pools_limits_and_stop_on_sigterm(tmp_path: Path) -> None:
    config = FakeServerConfig(answers={"*": lambda *_: "Answer: 42"}, latency_s=0.3)
    with run_fake_server(config) as (base, fake):
        pool = tmp_path / "pool.yaml"
        entry = {
            "name": "m",
            "backend": "openai",
            "base_url": base,
            "model": "m",
            "max_concurrency": 4,
        }
        pool.write_text(yaml.safe_dump({"defaults": {"k": 1}, "models": [entry]}))
        with serving("--pool", str(pool), "--workers", "2") as (url, process, lines):
            api = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
            replies: list[Any] = []

            def ask() -> None:
                replies.append(
                    api.chat.completions.create(
                        model="slm-mux", messages=[{"role": "user", "content": "6*7?"}]
                    )
                )

            askers = [threading.Thread(target=ask) for _ in range(16)]
            for asker in askers:
                asker.start()
            for asker in askers:
                asker.join(timeout=60)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
    assert [r.model_extra["slm_mux"]["answer"] for r in replies] == ["42"] * 16
    assert fake.request_count == 16
    assert fake.max_in_flight <= 4  # each of the 2 workers keeps to 4 // 2
    workers = set(re.findall(r"Started server process \[(\d+)\]", "".join(lines)))
    assert len(workers) == 2


def test_a_bad_workers_count_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run_main(capsys, "--pool", pool_file(tmp_path), "--workers", "0")
    assert status == 2 and "--workers" in err


@pytest.mark.parametrize(
    ("host", "key", "warned"),
    [("0.0.0.0", False, True), ("::", False, True), ("0.0.0.0", True, False),
     ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False)],
)  # fmt: skip
def test_listening_beyond_loopback_without_a_key_warns(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    key: bool,
    warned: bool,
) -> None:
    if ":" in host and not socket.has_ipv6:
        pytest.skip("no IPv6")
    monkeypatch.setattr("slm_mux.server.run.serve", lambda app, sock: None)
    monkeypatch.setenv("SLM_MUX_TEST_SERVE_KEY", "k")
    extra = ["--api-key-env", "SLM_MUX_TEST_SERVE_KEY"] if key else []
    code, err = run_main(
        capsys, "--pool", pool_file(tmp_path), "--host", host, "--port", "0", *extra
    )
    assert code == 0
    assert ("no --api-key-env is set" in err) is warned
