"""The pool file: which models SLM-MUX multiplexes, and how to reach and sample them.

A YAML (``.yaml``/``.yml``) or TOML (``.toml``) file with generation
``defaults`` and a list of ``models``::

    defaults: {temperature: 0.3, k: 3, max_tokens: 1024, seed: 0}
    models:
      - {name: qwen-1.5b, backend: openai, base_url: "http://127.0.0.1:8000/v1",
         model: Qwen/Qwen2.5-1.5B-Instruct}
      - {name: tiny, backend: transformers, path: ./models/tiny}
      - {name: fake, backend: scripted, script: {"*": ["#### 4", "#### 5"]}}

Every key is checked: a typo, a key another backend uses, a missing required
key or a duplicate name is an :class:`~slm_mux.errors.InputError` naming the
file and the key's path, e.g. ``pool.yaml: models[1].temprature: unknown key``.
API keys are never in the file, only the *name* of the environment variable
holding one (read when the backend is built). TOML is read with ``tomllib``
(``tomli`` on Python 3.10).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from slm_mux.backends.base import Backend, Price
from slm_mux.backends.openai_compat import OpenAICompatibleBackend
from slm_mux.backends.scripted import ScriptedBackend
from slm_mux.backends.transformers_local import TransformersBackend
from slm_mux.engine import Member
from slm_mux.errors import FormatError, InputError

BackendKind = Literal["openai", "transformers", "scripted"]

_BACKEND_KEYS: dict[str, frozenset[str]] = {
    "openai": frozenset(
        {
            "base_url",
            "model",
            "api_key_env",
            "headers",
            "max_concurrency",
            "requests_per_minute",
            "timeout_s",
            "max_retries",
            "supports_n",
        }
    ),
    "transformers": frozenset({"path", "device", "dtype", "threads"}),
    "scripted": frozenset({"script", "latency_s"}),
}
_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("base_url", "model"),
    "transformers": ("path",),
    "scripted": ("script",),
}
_KEY_ERROR = "pool_key"  # our own validation errors: ctx "key" extends the location


def _key_error(key: str, reason: str) -> PydanticCustomError:
    return PydanticCustomError(_KEY_ERROR, "{key}: {reason}", {"key": key, "reason": reason})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceConfig(_Strict):
    """A model's price, for cost accounting."""

    input_per_million: float = Field(ge=0, description="US dollars per million prompt tokens.")
    output_per_million: float = Field(ge=0, description="US dollars per million completion tokens.")

    def price(self) -> Price:
        """The backend-level :class:`~slm_mux.backends.base.Price`."""
        return Price(self.input_per_million, self.output_per_million)


class Defaults(_Strict):
    """Generation settings for every model that does not override them."""

    temperature: float = Field(
        default=0.3, ge=0, description="Sampling temperature (the paper uses 0.3)."
    )
    k: int = Field(
        default=3, ge=1, description="Samples per model and question (the paper uses 3)."
    )
    max_tokens: int = Field(default=1024, ge=1, description="Most tokens a sample may generate.")
    seed: int | None = Field(
        default=0, description="Base sampling seed; null for unseeded sampling."
    )


@dataclass(frozen=True)
class GenerationSettings:
    """A model's effective generation settings (its overrides over the defaults)."""

    temperature: float
    k: int
    max_tokens: int
    seed: int | None


class ModelConfig(_Strict):
    """One model of the pool: its backend, how to reach it, and its overrides."""

    name: str = Field(
        min_length=1, description="The model's name in the pool, the store and reports."
    )
    backend: BackendKind = Field(
        description="Which backend runs it: openai, transformers or scripted."
    )
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
    k: int | None = Field(default=None, ge=1, description="Overrides defaults.k.")
    max_tokens: int | None = Field(default=None, ge=1, description="Overrides defaults.max_tokens.")
    seed: int | None = Field(default=None, description="Overrides defaults.seed.")

    base_url: str | None = Field(
        default=None, description="openai: server URL, e.g. http://host:8000/v1."
    )
    model: str | None = Field(default=None, description="openai: the model name the server knows.")
    api_key_env: str | None = Field(
        default=None, description="openai: NAME of the environment variable holding the API key."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="openai: extra HTTP headers (no secrets)."
    )
    max_concurrency: int = Field(
        default=16, ge=1, description="openai: most requests in flight per endpoint."
    )
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="openai: request rate limit per endpoint; null for none."
    )
    timeout_s: float = Field(
        default=120.0, gt=0, description="openai: seconds before an attempt is abandoned."
    )
    max_retries: int = Field(default=4, ge=0, description="openai: retries after a failed attempt.")
    supports_n: bool | None = Field(
        default=None, description="openai: whether the server honours n; null to detect it."
    )

    path: str | None = Field(
        default=None,
        description="transformers: hub id or directory; ./, ../ and ~ paths are "
        "relative to the pool file.",
    )
    device: str = Field(
        default="cpu", description="transformers: torch device, e.g. cpu or cuda:0."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="transformers: weight dtype."
    )
    threads: int | None = Field(default=None, ge=1, description="transformers: torch CPU threads.")

    script: dict[str, list[str]] | None = Field(
        default=None, description='scripted: responses by question substring ("*" for any), cycled.'
    )
    latency_s: float = Field(
        default=0.0, ge=0, description="scripted: seconds to wait per request."
    )

    @model_validator(mode="after")
    def _check_backend_keys(self) -> ModelConfig:
        foreign = sorted(
            key
            for kind, keys in _BACKEND_KEYS.items()
            if kind != self.backend
            for key in keys & self.model_fields_set
        )
        if foreign:
            raise _key_error(foreign[0], f"not used by backend {self.backend!r}")
        for key in _REQUIRED_KEYS[self.backend]:
            if getattr(self, key) is None:
                raise _key_error(key, f"required for backend {self.backend!r}")
        return self

    def settings(self, defaults: Defaults) -> GenerationSettings:
        """The effective temperature, k, max_tokens and seed."""
        return GenerationSettings(
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            k=defaults.k if self.k is None else self.k,
            max_tokens=defaults.max_tokens if self.max_tokens is None else self.max_tokens,
            seed=defaults.seed if self.seed is None else self.seed,
        )

    def settings_hash(self, defaults: Defaults) -> str:
        """SHA-256 (hex) of what determines a sample's distribution.

        Covers the backend kind, the model's identity (openai: ``model``;
        transformers: ``path`` and ``dtype``; scripted: ``script``) and the
        effective temperature, max_tokens and seed. It leaves out ``k`` (more
        samples do not change earlier ones), the server address, limits and
        headers, and never sees secrets.
        """
        identity: dict[str, Any]
        if self.backend == "openai":
            identity = {"model": self.model}
        elif self.backend == "transformers":
            identity = {"path": self.path, "dtype": self.dtype}
        else:
            identity = {"script": self.script}
        settings = asdict(self.settings(defaults))
        del settings["k"]
        payload = {"backend": self.backend, **identity, **settings}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Pool(_Strict):
    """The models to multiplex and their generation defaults."""

    defaults: Defaults = Field(default=Defaults(), description="Generation defaults.")
    models: list[ModelConfig] = Field(min_length=1, description="The models, in tie-break order.")

    @model_validator(mode="after")
    def _check_unique_names(self) -> Pool:
        seen: set[str] = set()
        for i, model in enumerate(self.models):
            if model.name in seen:
                raise _key_error(f"models[{i}].name", f"duplicate model name {model.name!r}")
            seen.add(model.name)
        return self

    @property
    def names(self) -> list[str]:
        """The models' names, in pool order."""
        return [model.name for model in self.models]

    def model(self, name: str) -> ModelConfig:
        """The model called ``name``."""
        for model in self.models:
            if model.name == name:
                return model
        raise InputError(f"unknown model {name!r}; the pool has {', '.join(self.names)}")


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc]
    return "".join(parts).lstrip(".")


def _describe(error: ErrorDetails) -> str:
    """One error as ``path: reason``."""
    where = _location(error["loc"])
    kind = error["type"]
    if kind == _KEY_ERROR:
        context = error.get("ctx", {})
        where = f"{where}.{context['key']}" if where else str(context["key"])
        reason = str(context["reason"])
    elif kind == "extra_forbidden":
        reason = "unknown key"
    elif kind == "missing":
        reason = "missing key"
    else:
        reason = error["msg"]
        if not isinstance(error["input"], (dict, list)):
            reason += f" (got {error['input']!r})"
    return f"{where}: {reason}" if where else reason


def pool_from_dict(data: object, *, source: str = "pool", base_dir: Path | None = None) -> Pool:
    """Validate ``data`` (a parsed pool file) into a :class:`Pool`.

    ``source`` names the origin in error messages; transformers paths starting
    with ``./``, ``../`` or ``~`` become absolute, relative ones resolved
    against ``base_dir`` (default: the working directory).
    """
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping with a 'models' list")
    try:
        pool = Pool.model_validate(data)
    except ValidationError as invalid:
        # A typo is both an unknown key and a missing one; the unknown key says more.
        errors = sorted(invalid.errors(), key=lambda error: error["type"] != "extra_forbidden")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"{source}: {_describe(errors[0])}{more}") from None
    return pool.model_copy(
        update={"models": [_resolve_path(model, base_dir) for model in pool.models]}
    )


def _resolve_path(model: ModelConfig, base_dir: Path | None) -> ModelConfig:
    path = model.path
    if path is None or not path.startswith(("./", "../", "~")):
        return model
    resolved = Path(path).expanduser()
    if base_dir is not None and not resolved.is_absolute():
        resolved = base_dir / resolved
    return model.model_copy(update={"path": str(resolved.resolve())})


def _parse_toml(source: str, text: str) -> object:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
        line = int(found.group(1)) if found else None
        reason = message[: found.start()] if found else message
        raise FormatError(source, line, reason) from None


def _parse_yaml(source: str, text: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise FormatError(source, line, str(reason)) from None


def load_pool(path: str | Path) -> Pool:
    """Read and validate a pool file (``.yaml``, ``.yml`` or ``.toml``)."""
    file = Path(path)
    source = str(path)
    suffix = file.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise InputError(f"{source}: a pool file must end in .yaml, .yml or .toml")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{source}: cannot read pool file: {error.strerror}") from None
    data = _parse_toml(source, text) if suffix == ".toml" else _parse_yaml(source, text)
    return pool_from_dict(data, source=source, base_dir=file.parent)


def _required(model: ModelConfig, key: str) -> str:
    value = getattr(model, key)
    if not isinstance(value, str):
        raise InputError(f"model {model.name!r}: {key} is required for backend {model.backend!r}")
    return value


def build_backend(model: ModelConfig) -> Backend:
    """A backend for ``model`` (reads its API key from the environment, if it has one)."""
    if model.backend == "openai":
        return OpenAICompatibleBackend(
            model.name,
            base_url=_required(model, "base_url"),
            model=_required(model, "model"),
            api_key_env=model.api_key_env,
            headers=model.headers,
            max_concurrency=model.max_concurrency,
            requests_per_minute=model.requests_per_minute,
            timeout_s=model.timeout_s,
            max_retries=model.max_retries,
            supports_n=model.supports_n,
            price=model.price.price() if model.price is not None else None,
        )
    if model.backend == "transformers":
        return TransformersBackend(
            model.name,
            _required(model, "path"),
            device=model.device,
            dtype=model.dtype,
            threads=model.threads,
        )
    if model.script is None:
        raise InputError(f"model {model.name!r}: script is required for backend 'scripted'")
    return ScriptedBackend(model.name, model.script, latency_s=model.latency_s)


def members_of(
    pool: Pool, *, k: int | None = None, models: Sequence[str] | None = None
) -> list[Member]:
    """Engine members for the pool's models, backends built.

    ``models`` picks and orders models by name (default: all, in pool order);
    ``k``, when given, replaces every model's own.
    """
    chosen = pool.models if models is None else [pool.model(name) for name in models]
    members = []
    for model in chosen:
        settings = model.settings(pool.defaults)
        members.append(
            Member(
                build_backend(model),
                k=settings.k if k is None else k,
                temperature=settings.temperature,
                max_tokens=settings.max_tokens,
                seed=settings.seed,
                settings_hash=model.settings_hash(pool.defaults),
                price=model.price.price() if model.price is not None else None,
            )
        )
    return members
