"""Serving the app with uvicorn: bind, announce, drain in-flight requests on SIGTERM.

One process serves by default. With several workers (:func:`serve_workers`) uvicorn's
supervisor starts that many processes on the one listening socket; each builds its
own app from the same :class:`ServeSettings` (passed in the environment) over the
pool with its servers' limits divided among the workers (:meth:`Pool.shared_by`), so
together they keep to the pool file's concurrency and rate limits.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from slm_mux.errors import InputError

WORKER_SETTINGS = "SLM_MUX_SERVE_SETTINGS"
"""The environment variable that carries a worker's :class:`ServeSettings` (JSON)."""

BACKLOG = 2048
"""Connections the kernel queues for the workers (uvicorn's default)."""

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
        sock.listen(BACKLOG)  # from now on connections queue until a worker accepts them
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


@dataclass(frozen=True)
class ServeSettings:
    """What every worker builds its app from: the pool file, task, ``k``, the
    tie-break accuracies, the sampling policy and the *name* of the API-key variable."""

    pool: str
    task: str
    k: int | None = None
    validation_accuracy: dict[str, float] = field(default_factory=dict)
    adaptive: str | None = None
    api_key_env: str | None = None
    workers: int = 1


def api_key(settings: ServeSettings) -> str | None:
    """The key every request must send, read from the variable the settings name."""
    if settings.api_key_env is None:
        return None
    value = os.environ.get(settings.api_key_env)
    if not value:
        raise InputError(f"--api-key-env: environment variable {settings.api_key_env} is not set")
    return value


def build_app(settings: ServeSettings) -> Starlette:
    """The app over the settings' pool (its limits shared among the workers)."""
    from slm_mux.engine import Mux
    from slm_mux.pool import load_pool
    from slm_mux.server.app import create_app

    pool = load_pool(settings.pool).shared_by(settings.workers)
    mux = Mux.from_pool(
        pool,
        task=settings.task,
        k=settings.k,
        validation_accuracy=settings.validation_accuracy,
        adaptive=settings.adaptive,
    )
    return create_app(
        mux.members,
        task=mux.task,
        validation_accuracy=mux.validation_accuracy,
        api_key=api_key(settings),
        close=True,
        adaptive=mux.policy,
    )


def worker_app() -> Starlette:
    """A worker's app, from the settings its supervisor put in the environment."""
    return build_app(ServeSettings(**json.loads(os.environ[WORKER_SETTINGS])))


def _config(app: Starlette | str, sock: socket.socket, drain_s: float, workers: int) -> Any:
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    print(f"slm-mux: serving on http://{where}:{port}/v1 (Ctrl-C to stop)", file=sys.stderr)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=_logging(),
        timeout_graceful_shutdown=int(drain_s),
        server_header=False,
        factory=isinstance(app, str),
        workers=workers,
    )


def serve(app: Starlette, sock: socket.socket, *, drain_s: float = DRAIN_S) -> None:
    """Serve ``app`` on the bound ``sock`` until SIGINT or SIGTERM.

    A shutdown stops accepting connections and waits up to ``drain_s`` seconds for the
    requests in flight to be answered (uvicorn's graceful shutdown).
    """
    uvicorn.Server(_config(app, sock, drain_s, 1)).run(sockets=[sock])


def serve_workers(
    settings: ServeSettings, sock: socket.socket, *, drain_s: float = DRAIN_S
) -> None:
    """Serve on ``sock`` with ``settings.workers`` processes, each building its app from
    ``settings``, until SIGINT or SIGTERM; a shutdown drains every worker as :func:`serve`
    does, and a worker that dies is replaced."""
    os.environ[WORKER_SETTINGS] = json.dumps(asdict(settings))
    config = _config(f"{__name__}:worker_app", sock, drain_s, settings.workers)
    Multiprocess(config, sockets=[sock]).run()
