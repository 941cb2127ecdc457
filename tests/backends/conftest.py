"""Fixtures for the backend tests: a fake OpenAI-compatible server and backend factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from slm_mux.backends import OpenAICompatibleBackend
from slm_mux.testing import FakeServer, run_fake_server


@pytest.fixture
def fake_server() -> Iterator[tuple[str, FakeServer]]:
    """A fake server with the default configuration: ``(base_url, server)``."""
    with run_fake_server() as running:
        yield running


@pytest.fixture
async def make_backend() -> AsyncIterator[Callable[..., OpenAICompatibleBackend]]:
    """Builds OpenAI-compatible backends with fast test defaults; closes them afterwards."""
    made: list[OpenAICompatibleBackend] = []

    def make(base_url: str, name: str = "qwen", **options: Any) -> OpenAICompatibleBackend:
        settings: dict[str, Any] = {
            "model": "qwen2.5-1.5b",
            "timeout_s": 2.0,
            "max_retries": 2,
            "backoff_base_s": 0.01,
            "backoff_max_s": 1.0,
            "retry_base_s": 0.01,
        }
        settings.update(options)
        backend = OpenAICompatibleBackend(name, base_url=base_url, **settings)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()
