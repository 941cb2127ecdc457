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
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("the fake server did not start")
