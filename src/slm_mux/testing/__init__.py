"""Test helpers shipped with the package: a fake OpenAI-compatible server, a tiny model
and a manual clock.

The fake server needs uvicorn and starlette (the ``server`` or ``dev`` extra);
the tiny model needs the ``local`` extra.
"""

from slm_mux.testing.clock import ManualClock
from slm_mux.testing.fake_server import (
    AnswerFn,
    FakeServer,
    FakeServerConfig,
    Fault,
    RecordedRequest,
    echo_answer,
    run_fake_server,
)
from slm_mux.testing.tiny_model import build_tiny_model

__all__ = [
    "AnswerFn",
    "FakeServer",
    "FakeServerConfig",
    "Fault",
    "ManualClock",
    "RecordedRequest",
    "build_tiny_model",
    "echo_answer",
    "run_fake_server",
]
