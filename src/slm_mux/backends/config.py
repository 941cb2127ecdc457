"""What every model entry of a pool file has, whatever its backend.

Each backend's own entry (``backend: openai`` and its keys, ...) subclasses
:class:`ModelBase` in the backend's module and builds the backend; the pool
file (:mod:`slm_mux.pool`) picks the class by the ``backend`` key.

Types are strict: ``k: 3.0``, ``k: true`` or ``temperature: "0.5"`` are errors,
not silently converted (an integer is still a valid float), and floats must be
finite. ``k`` and ``seed`` have the CLI's bounds (:data:`MAX_K`, :data:`MAX_SEED`).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from slm_mux.adaptive import Policy
from slm_mux.backends.base import Backend, Price
from slm_mux.defaults import DEFAULT_K, MAX_K, MAX_SEED
from slm_mux.errors import InputError

KEY_ERROR = "pool_key"
"""The type of :func:`key_error`'s errors; the pool file appends ``ctx["key"]`` to the location."""


def key_error(key: str, reason: str) -> PydanticCustomError:
    """A pool-file error about ``key`` (relative to where validation is) with ``reason``."""
    return PydanticCustomError(KEY_ERROR, "{key}: {reason}", {"key": key, "reason": reason})


class Strict(BaseModel):
    """A pool-file section: unknown keys are errors, types strict, floats finite, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class PriceConfig(Strict):
    """A model's price, for cost accounting."""

    input_per_million: float = Field(ge=0, description="US dollars per million prompt tokens.")
    output_per_million: float = Field(ge=0, description="US dollars per million completion tokens.")

    def price(self) -> Price:
        """The backend-level :class:`~slm_mux.backends.base.Price`."""
        return Price(self.input_per_million, self.output_per_million)


class Defaults(Strict):
    """Generation settings for every model that does not override them."""

    temperature: float = Field(
        default=0.3, ge=0, description="Sampling temperature (the paper uses 0.3)."
    )
    k: int = Field(
        default=DEFAULT_K,
        ge=1,
        le=MAX_K,
        description=f"Samples per model in one SLM-MUX vote (the paper's k, {DEFAULT_K}); "
        "also how many samples a collection stores unless --samples says otherwise.",
    )
    max_tokens: int = Field(default=1024, ge=1, description="Most tokens a sample may generate.")
    top_p: float = Field(
        default=1.0, gt=0, le=1, description="Nucleus sampling mass (1: off, as in the paper)."
    )
    seed: int | None = Field(
        default=0, ge=0, le=MAX_SEED, description="Base sampling seed; null for unseeded sampling."
    )
    adaptive: str = Field(
        default="full",
        description="SLM-MUX sampling policy: full (k samples per model), exact (lossless, "
        "in rounds), first-agree, two-unanimous or agree:T; the ask, collect and compare "
        "flag --adaptive overrides it.",
    )

    @model_validator(mode="after")
    def _check_adaptive(self) -> Defaults:
        try:
            Policy.parse(self.adaptive)
        except InputError as error:
            raise key_error("adaptive", str(error)) from None
        return self


@dataclass(frozen=True)
class GenerationSettings:
    """A model's effective generation settings (its overrides over the defaults)."""

    temperature: float
    k: int
    max_tokens: int
    seed: int | None
    top_p: float = 1.0


class ModelBase(Strict, ABC):
    """The keys every model entry has; subclasses add their backend's keys."""

    name: str = Field(
        min_length=1,
        description="The model's name in the pool, the store and reports (no commas, which "
        "separate names on the command line, and no line breaks or other control characters).",
    )
    backend: str = Field(description="Which backend runs it: openai, transformers or scripted.")
    validation_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Tie-break accuracy; null to compute it from the store.",
    )
    price: PriceConfig | None = Field(
        default=None, description="Token prices, for cost accounting."
    )
    temperature: float | None = Field(
        default=None, ge=0, description="Overrides defaults.temperature."
    )
    k: int | None = Field(default=None, ge=1, le=MAX_K, description="Overrides defaults.k.")
    max_tokens: int | None = Field(default=None, ge=1, description="Overrides defaults.max_tokens.")
    seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED, description="Overrides defaults.seed."
    )
    top_p: float | None = Field(default=None, gt=0, le=1, description="Overrides defaults.top_p.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if any(char == "," or not char.isprintable() for char in name):
            raise PydanticCustomError(
                "pool_name", "a model name cannot hold commas, line breaks or control characters"
            )
        return name

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What names the model's weights for :meth:`settings_hash` (never a secret)."""

    @abstractmethod
    def build(self) -> Backend:
        """The backend (reads an API key from the environment, if the entry names one)."""

    def relative_to(self, base_dir: Path | None) -> ModelBase:
        """This entry with paths relative to the pool file made absolute (default: unchanged)."""
        return self

    def shared_by(self, workers: int) -> ModelBase:
        """This entry for one of ``workers`` processes that share its servers' limits
        (each gets its share of them; default: unchanged, nothing shared)."""
        return self

    def settings(self, defaults: Defaults) -> GenerationSettings:
        """The effective temperature, k, max_tokens, seed and top_p."""
        return GenerationSettings(
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            k=defaults.k if self.k is None else self.k,
            max_tokens=defaults.max_tokens if self.max_tokens is None else self.max_tokens,
            seed=defaults.seed if self.seed is None else self.seed,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
        )

    def settings_hash(self, defaults: Defaults) -> str:
        """SHA-256 (hex) of what determines a sample's distribution.

        Covers the backend kind, the model's :meth:`identity` and the
        effective temperature, max_tokens, seed and top_p (only when below 1,
        so stores from before the key existed keep their hash). It leaves out
        ``k`` (more samples do not change earlier ones), the server address,
        limits and headers, and never sees secrets.
        """
        settings = asdict(self.settings(defaults))
        del settings["k"]
        if settings["top_p"] == 1:
            del settings["top_p"]
        payload = {"backend": self.backend, **self.identity(), **settings}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
