"""Backends are registered in one dict, and importing slm-mux loads no heavy library."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest

from slm_mux.backends.config import ModelBase
from slm_mux.backends.registry import BACKENDS
from slm_mux.errors import InputError
from slm_mux.pool import pool_from_dict

HEAVY = ("aiohttp", "openai", "torch", "transformers", "rich")


def test_each_registered_name_is_its_entry_classes_backend_key() -> None:
    assert list(BACKENDS) == sorted(BACKENDS)
    for name, entry in BACKENDS.items():
        assert issubclass(entry, ModelBase)
        assert get_args(entry.model_fields["backend"].annotation) == (name,)


def test_the_pool_file_offers_exactly_the_registered_backends() -> None:
    with pytest.raises(InputError) as caught:
        pool_from_dict({"models": [{"name": "x", "backend": "nope"}]})
    assert str(caught.value) == (
        "pool: models[0].backend: unknown backend 'nope'; choose from openai, scripted, "
        "transformers"
    )
    assert ", ".join(BACKENDS) == "openai, scripted, transformers"


@pytest.mark.parametrize(
    "module", ["slm_mux", "slm_mux.pool", "slm_mux.backends.registry", "slm_mux.backends"]
)
def test_importing_loads_no_http_client_sdk_torch_or_rich(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_building_an_openai_model_loads_its_http_client() -> None:
    probe = (
        "import sys\n"
        "from slm_mux.pool import pool_from_dict\n"
        "pool = pool_from_dict({'models': [{'name': 'a', 'backend': 'openai', "
        "'base_url': 'http://127.0.0.1:9/v1', 'model': 'm'}]})\n"
        "built = pool.models[0].build()\n"
        "print('aiohttp' in sys.modules, type(built).__name__)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert shown.split() == ["True", "OpenAICompatibleBackend"]
