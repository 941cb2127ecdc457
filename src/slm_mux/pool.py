"""The pool file: which models SLM-MUX multiplexes, and how to reach and sample them.

A YAML (``.yaml``/``.yml``) or TOML (``.toml``) file with generation
``defaults`` and a list of ``models``::

    defaults: {temperature: 0.3, k: 3, max_tokens: 1024, seed: 0}
    models:
      - {name: qwen-1.5b, backend: openai, base_url: "http://127.0.0.1:8000/v1",
         model: Qwen/Qwen2.5-1.5B-Instruct}
      - {name: tiny, backend: transformers, path: ./models/tiny}
      - {name: fake, backend: scripted, script: {"*": ["#### 4", "#### 5"]}}

Each model's ``backend`` key picks its entry class, which lives beside the
backend and builds it (:class:`~slm_mux.backends.config.ModelBase`); the
classes are registered in :data:`slm_mux.backends.registry.BACKENDS`. Every key is checked: a
typo, a key another backend uses, a missing required key, a duplicate name or
a key written twice is an :class:`~slm_mux.errors.InputError` naming the file
and the key's path (or line), e.g. ``pool.yaml: models[1].temprature: unknown
key`` or ``pool.yaml:4: duplicate key 'k'``.
API keys are never in the file, only the *name* of the environment variable
holding one (read when the backend is built). TOML is read with ``tomllib``
(``tomli`` on Python 3.10).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from slm_mux.backends.config import KEY_ERROR, Defaults, ModelBase, Strict, key_error
from slm_mux.backends.registry import BACKENDS as _CONFIGS
from slm_mux.errors import FormatError, InputError
from slm_mux.members import Member

if TYPE_CHECKING:
    ModelConfig = ModelBase
else:
    ModelConfig = Annotated[Union[tuple(_CONFIGS.values())], Field(discriminator="backend")]  # noqa: UP007
"""One model of the pool: the entry class its ``backend`` key names."""

_COMMON_KEYS = frozenset(ModelBase.model_fields)


class Pool(Strict):
    """The models to multiplex and their generation defaults."""

    defaults: Defaults = Field(default=Defaults(), description="Generation defaults.")
    models: list[ModelConfig] = Field(min_length=1, description="The models, in tie-break order.")

    @model_validator(mode="after")
    def _check_unique_names(self) -> Pool:
        seen: set[str] = set()
        for i, model in enumerate(self.models):
            if model.name in seen:
                raise key_error(f"models[{i}].name", f"duplicate model name {model.name!r}")
            seen.add(model.name)
        return self

    @property
    def names(self) -> list[str]:
        """The models' names, in pool order."""
        return [model.name for model in self.models]

    @property
    def validation_accuracy(self) -> dict[str, float]:
        """The tie-break accuracies the pool file gives, by model name."""
        return {
            m.name: m.validation_accuracy for m in self.models if m.validation_accuracy is not None
        }

    def shared_by(self, workers: int) -> Pool:
        """This pool for one of ``workers`` processes serving it at once: each model's
        server limits divided among them (:meth:`ModelBase.shared_by`)."""
        return self.model_copy(update={"models": [m.shared_by(workers) for m in self.models]})

    def model(self, name: str) -> ModelBase:
        """The model called ``name``."""
        for model in self.models:
            if model.name == name:
                return model
        raise InputError(f"unknown model {name!r}; the pool has {', '.join(self.names)}")


def _location(loc: tuple[int | str, ...]) -> tuple[str, str | None]:
    """``models[1].temperature`` from a pydantic location, and the backend it went through.

    A discriminated union puts the chosen backend's name after the list index;
    it is dropped from the path and returned instead.
    """
    parts: list[str] = []
    backend = None
    for i, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif i > 0 and isinstance(loc[i - 1], int) and part in _CONFIGS:
            backend = part
        else:
            parts.append(f".{part}")
    return "".join(parts).lstrip("."), backend


def _describe(error: ErrorDetails) -> str:
    """One error as ``path: reason``."""
    where, backend = _location(error["loc"])
    kind = error["type"]
    key = str(error["loc"][-1]) if error["loc"] else ""
    if kind == KEY_ERROR:
        context = error.get("ctx", {})
        where = f"{where}.{context['key']}" if where else str(context["key"])
        reason = str(context["reason"])
    elif kind == "union_tag_not_found":
        where = f"{where}.backend"
        reason = f"missing key; choose from {', '.join(_CONFIGS)}"
    elif kind == "union_tag_invalid":
        where = f"{where}.backend"
        tag = error.get("ctx", {}).get("tag")
        reason = f"unknown backend {tag!r}; choose from {', '.join(_CONFIGS)}"
    elif kind == "extra_forbidden" and backend is not None and _foreign(key, backend):
        reason = f"not used by backend {backend!r}"
    elif kind == "extra_forbidden":
        reason = "unknown key"
    elif kind == "missing" and backend is not None and key not in _COMMON_KEYS:
        reason = f"required for backend {backend!r}"
    elif kind == "missing":
        reason = "missing key"
    else:
        reason = error["msg"]
        if not isinstance(error["input"], (dict, list)):
            reason += f" (got {error['input']!r})"
    return f"{where}: {reason}" if where else reason


def _foreign(key: str, backend: str) -> bool:
    """Whether ``key`` belongs to a backend other than ``backend``."""
    return any(key in config.model_fields for name, config in _CONFIGS.items() if name != backend)


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
    # A top_p set in defaults is set on each model: servers get it even at 1
    # (OpenAIConfig.server_sampling).
    top_p = {"top_p": pool.defaults.top_p} if "top_p" in pool.defaults.model_fields_set else {}
    models = [m.relative_to(base_dir) for m in pool.models]
    models = [m.model_copy(update=top_p) if m.top_p is None else m for m in models]
    return pool.model_copy(update={"models": models})


TOO_DEEP = "nested too deeply to be a pool file"


def _parse_toml(source: str, text: str) -> object:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise FormatError(source, None, TOO_DEEP) from None
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
        line = int(found.group(1)) if found else None
        reason = message[: found.start()] if found else message
        raise FormatError(source, line, reason) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key written twice (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(source: str, text: str) -> object:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        raise FormatError(source, None, TOO_DEEP) from None
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
    except UnicodeDecodeError as error:
        raise InputError(
            f"{source}: not a UTF-8 text file (byte {error.start}: {error.reason})"
        ) from None
    data = _parse_toml(source, text) if suffix == ".toml" else _parse_yaml(source, text)
    return pool_from_dict(data, source=source, base_dir=file.parent)


def members_of(
    pool: Pool, *, k: int | None = None, models: Sequence[str] | None = None
) -> list[Member]:
    """Engine members for the pool's models, backends built.

    ``models`` picks and orders models by name (default: all, in pool order);
    ``k`` (samples per model in a vote), when given, replaces every model's own.
    """
    chosen = pool.models if models is None else [pool.model(name) for name in models]
    members = []
    for model in chosen:
        settings = model.settings(pool.defaults)
        members.append(
            Member(
                model.build(),
                k=settings.k if k is None else k,
                temperature=settings.temperature,
                max_tokens=settings.max_tokens,
                seed=settings.seed,
                top_p=settings.top_p,
                settings_hash=model.settings_hash(pool.defaults),
                price=model.price.price() if model.price is not None else None,
            )
        )
    return members
