"""Fixtures of the opt-in real-model tests (marker ``real``).

The weights come from ``scripts/fetch_real_pool.py`` into ``$SLM_MUX_REAL_POOL``
(default ``~/.cache/slm-mux/real-pool``); llama.cpp's server from
``pip install 'llama-cpp-python[server]'``. Each fixture skips with the reason
when what it needs is absent.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

POOL = Path(os.environ.get("SLM_MUX_REAL_POOL", "~/.cache/slm-mux/real-pool")).expanduser()
SMOLLM2 = POOL / "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
SERVER_START_S = 120.0


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct's GGUF file, for the in-process backend."""
    if not SMOLLM2.is_file():
        pytest.skip(f"no real pool at {POOL}: run scripts/fetch_real_pool.py (SLM_MUX_REAL_POOL)")
    pytest.importorskip("gguf", reason="the real pool needs the gguf extra")
    pytest.importorskip("accelerate", reason="the real pool needs the gguf extra")
    return SMOLLM2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Return once ``url`` answers; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text(errors="replace")[-2000:]
            pytest.fail(f"llama_cpp.server exited with {process.returncode}: {output}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    process.kill()
    pytest.fail(f"llama_cpp.server did not answer {url} within {SERVER_START_S:g}s")


@pytest.fixture(scope="session")
def llamacpp_smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL (``.../v1``) of a ``llama_cpp.server`` serving SmolLM2 as ``smollm2-135m``
    with its chat template (``chatml``), one thread, on a free loopback port."""
    if not SMOLLM2.is_file():
        pytest.skip(f"no real pool at {POOL}: run scripts/fetch_real_pool.py (SLM_MUX_REAL_POOL)")
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(
            f"llama.cpp's server is not installed ({', '.join(missing)} missing): "
            "pip install 'llama-cpp-python[server]'"
        )
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(SMOLLM2)]
    command += ["--model_alias", "smollm2-135m", "--chat_format", "chatml"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", "1"]
    log = tmp_path_factory.mktemp("llama-cpp") / "server.log"  # its load log fills a pipe
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_serving(process, f"{base_url}/models", log)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
