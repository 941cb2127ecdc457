"""Model backends: an OpenAI-compatible client, in-process transformers, and a script.

Build them from a pool file: each entry of :func:`slm_mux.pool.load_pool` has ``build()``;
the entries are registered in :mod:`slm_mux.backends.registry`. The concrete
backends are imported on first use, so ``import slm_mux`` does not load
``aiohttp`` or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from slm_mux.backends.base import (
    Backend,
    Completion,
    GenerationRequest,
    Price,
    Usage,
    split_tokens,
)

if TYPE_CHECKING:
    from slm_mux.backends.openai.client import OpenAICompatibleBackend
    from slm_mux.backends.scripted import ScriptedBackend, ScriptFn
    from slm_mux.backends.transformers_local import TransformersBackend

_LAZY = {
    "OpenAICompatibleBackend": "slm_mux.backends.openai.client",
    "ScriptFn": "slm_mux.backends.scripted",
    "ScriptedBackend": "slm_mux.backends.scripted",
    "TransformersBackend": "slm_mux.backends.transformers_local",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Backend",
    "Completion",
    "GenerationRequest",
    "OpenAICompatibleBackend",
    "Price",
    "ScriptFn",
    "ScriptedBackend",
    "TransformersBackend",
    "Usage",
    "split_tokens",
]
