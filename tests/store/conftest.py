"""Fixtures for the store and import tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from slm_mux import jsonfile


@pytest.fixture(params=["orjson", "stdlib"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with ``orjson`` parsing JSON Lines, then with the standard library only."""
    if request.param == "stdlib":
        monkeypatch.setattr(jsonfile, "_fast_loads", None)
    else:
        assert jsonfile._fast_loads is not None, "orjson is a dependency"
    yield request.param
