"""Serving the app with uvicorn: bind, announce, drain in-flight requests on SIGTERM."""

from __future__ import annotations

import copy
import socket
import sys
from typing import Any

import uvicorn
from starlette.applications import Starlette

from slm_mux.errors import InputError

DRAIN_S = 60.0
"""Seconds a shutdown (SIGTERM, Ctrl-C) waits for in-flight requests before closing them."""


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), or one clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise InputError(f"--host {host!r}: {error.strerror or error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def _logging() -> dict[str, Any]:
    """Uvicorn's logging, every line (access lines too) on stderr: stdout stays for results."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config["loggers"]["slm_mux"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def serve(app: Starlette, sock: socket.socket, *, drain_s: float = DRAIN_S) -> None:
    """Serve ``app`` on the bound ``sock`` until SIGINT or SIGTERM.

    A shutdown stops accepting connections and waits up to ``drain_s`` seconds for the
    requests in flight to be answered (uvicorn's graceful shutdown).
    """
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    print(f"slm-mux: serving on http://{where}:{port}/v1 (Ctrl-C to stop)", file=sys.stderr)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=_logging(),
        timeout_graceful_shutdown=int(drain_s),
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
