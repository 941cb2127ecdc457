"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from slm_mux.members import Member
from slm_mux.server import create_app
from slm_mux.tasks import get_task

from .helpers import ACCURACY, Serve, running


@pytest.fixture
def serve() -> Serve:
    """``serve(members, **create_app options)``: a context manager yielding the base URL."""

    @contextmanager
    def start(members: Sequence[Member], **options: object) -> Iterator[str]:
        options.setdefault("task", get_task("exact"))
        options.setdefault("validation_accuracy", ACCURACY)
        with running(create_app(members, **options)) as url:  # type: ignore[arg-type]
            yield url

    return start
