"""The fake OpenAI-compatible server in its own process, for the live benchmarks.

A separate process keeps the server's CPU time out of the client's, so each
benchmark can report both.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, latency: float, *, honour_n: bool = True) -> subprocess.Popen[bytes]:
    """``python -m slm_mux.testing`` on ``port``, once it answers; the caller terminates it."""
    argv = [sys.executable, "-m", "slm_mux.testing", "--port", str(port)]
    argv += ["--latency", str(latency), *([] if honour_n else ["--ignore-n"])]
    server = subprocess.Popen(argv)
    wait_until_up(server, f"http://127.0.0.1:{port}/v1/models", "the fake server")
    return server


def wait_until_up(process: subprocess.Popen[bytes], url: str, what: str) -> None:
    """Wait (up to 30 s) until ``url`` answers; kill ``process`` and exit if it never does."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{what} did not start")
