"""Helpers of the server tests: the app served by uvicorn on loopback, scripted pools."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import uvicorn
from starlette.applications import Starlette

from slm_mux.backends.scripted import Script, ScriptedBackend
from slm_mux.members import Member
from slm_mux.server import listen

SCRIPT: dict[str, Script] = {
    "alpha": {"*": ["Answer: 4", "Answer: 4", "Answer: 5"]},
    "beta": {"*": ["Work: 2+2.\nAnswer: 4"]},
    "gamma": {"*": ["Answer: 7", "Answer: 8", "Answer: 9"]},
}
"""beta is sure (3/3) of 4, alpha leans to 4 (2/3), gamma is unsure (1/3)."""

ACCURACY = {"alpha": 0.5, "beta": 0.9, "gamma": 0.4}


@contextmanager
def running(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the ``/v1`` URL."""
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, log_level="critical", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def scripted_pool(script: dict[str, Script] | None = None) -> list[Member]:
    """Members answering from ``script`` (default :data:`SCRIPT`), k = 3 each."""
    return [
        Member(ScriptedBackend(name, answers), k=3) for name, answers in (script or SCRIPT).items()
    ]


def backends(members: Sequence[Member]) -> dict[str, ScriptedBackend]:
    """The scripted backends of ``members``, by model name."""
    found = {}
    for member in members:
        assert isinstance(member.backend, ScriptedBackend)
        found[member.name] = member.backend
    return found


Serve = Callable[..., AbstractContextManager[str]]
