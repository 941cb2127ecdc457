"""``slm-mux serve``: an OpenAI-compatible server over a pool."""

from __future__ import annotations

import argparse
import ipaddress
import socket
from pathlib import Path

from slm_mux.cli import flags
from slm_mux.cli.output import warn
from slm_mux.errors import InputError
from slm_mux.tasks import task_names


def cmd_serve(args: argparse.Namespace) -> int:
    from contextlib import closing

    try:
        from slm_mux.server.run import (
            ServeSettings,
            api_key,
            build_app,
            listen,
            serve,
            serve_workers,
        )
    except ModuleNotFoundError as missing:
        if (missing.name or "").split(".")[0] not in ("starlette", "uvicorn"):
            raise
        raise InputError(
            "serve needs Starlette and uvicorn; install them with: pip install 'slm-mux[server]'"
        ) from None
    from slm_mux.pool import load_pool

    accuracy: dict[str, float] = {}
    if args.store is not None:
        from slm_mux.study import stored_validation_accuracy

        accuracy = stored_validation_accuracy(args.store, task=args.task, warn=warn)
    settings = ServeSettings(
        pool=str(Path(args.pool).resolve()),
        task=args.task,
        k=args.k,
        validation_accuracy=accuracy,
        adaptive=None if args.adaptive is None else str(args.adaptive),
        api_key_env=args.api_key_env,
        workers=args.workers,
    )
    api_key(settings)  # a missing key variable is one error line here, not in each worker
    with closing(listen(args.host, args.port)) as sock:
        if args.api_key_env is None and not _loopback(sock):
            warn(
                f"--host {args.host} accepts connections from other machines and no "
                "--api-key-env is set: whoever reaches the port can use the pool's models"
            )
        if args.workers == 1:
            serve(build_app(settings), sock)
        else:
            load_pool(settings.pool)  # a bad pool file is one error line, before any worker
            serve_workers(settings, sock)
    return 0


def _loopback(sock: socket.socket) -> bool:
    """Whether ``sock`` is bound to a loopback address (only this machine can connect)."""
    return ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback


def add_commands(add: flags.AddCommand) -> None:
    """``serve``."""
    sub = add("serve", cmd_serve, "an OpenAI-compatible server answering with SLM-MUX")
    flags.pool_flag(sub)
    flags.task_flag(
        sub,
        task_names(),
        "task: prompt and answer extraction (exact: free-form, an 'Answer:' line)",
        default="exact",
    )
    flags.store_flag(sub, role="its validation split breaks ties", required=False)
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sub.add_argument(
        "--port", type=flags.integer(0, 65535), default=8000, help="port (0: a free one)"
    )
    sub.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key every request must send as a Bearer token",
    )
    flags.k_flag(sub, flags.LIVE_K)
    flags.adaptive_flag(sub, "; model slm-mux only")
    sub.add_argument(
        "--workers",
        type=flags.integer(1, flags.MAX_WORKERS),
        default=1,
        help="server processes; each takes its share of the pool's limits "
        "and loads its own in-process models",
    )
