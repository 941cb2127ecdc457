"""Every backend a pool file can name, registered in one place.

:data:`BACKENDS` maps the value of a model entry's ``backend`` key to its
entry class (a :class:`~slm_mux.backends.config.ModelBase` subclass whose
``build()`` makes the backend). Adding a backend is one module (the backend
and its entry class, importable without heavy dependencies: load those in
``build()`` or on first use), one line here, and a test.
"""

from __future__ import annotations

from slm_mux.backends.config import ModelBase
from slm_mux.backends.openai.config import OpenAIConfig
from slm_mux.backends.scripted import ScriptedConfig
from slm_mux.backends.transformers_local import TransformersConfig

BACKENDS: dict[str, type[ModelBase]] = {
    "openai": OpenAIConfig,
    "scripted": ScriptedConfig,
    "transformers": TransformersConfig,
}
"""Each backend's pool entry class, by the value of its ``backend`` key (sorted by name)."""
