"""The pool-file entry of an OpenAI-compatible model (``backend: openai``).

Importing it is light (pydantic and the wire format only): the client, and with it
``aiohttp``, loads when :meth:`OpenAIConfig.build` runs. Server URLs are checked when the pool
loads (:func:`url_problem`); ``user:password@`` credentials in one are sent as HTTP
Basic auth and appear in no message.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from slm_mux.backends.config import ModelBase, Strict, key_error
from slm_mux.backends.openai.replicas import WAIT_BUDGET_S
from slm_mux.backends.openai.wire import CONTROLLED, ServerSampling

if TYPE_CHECKING:
    from slm_mux.backends.openai.client import OpenAICompatibleBackend


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a server URL we can use, or ``None`` when it is.

    It needs an ``http`` or ``https`` scheme, a host and, if it gives one, a port
    from 1 to 65535. The reason never quotes the URL (it may hold a password).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:  # a malformed IPv6 address, a port out of range or not a number
        if "Port" in str(error):
            return "the port must be a number from 1 to 65535"
        return f"not a valid URL: {str(error).lower()}"
    if parts.scheme not in ("http", "https") or not url.lower().startswith(parts.scheme + "://"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "needs a host, as in http://host:8000/v1"
    if port == 0:
        return "the port must be a number from 1 to 65535"
    return None


class ReplicaConfig(Strict):
    """One replica of ``base_urls`` written as a mapping."""

    url: str = Field(description="Server URL, e.g. http://host:8000/v1.")
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Most requests in flight here; null for the model's."
    )


class OpenAIConfig(ModelBase):
    """A pool entry with ``backend: openai``: a model behind an OpenAI-compatible server."""

    backend: Literal["openai"] = Field(description="openai: an OpenAI-compatible server.")
    base_url: str | None = Field(
        default=None, description="Server URL, e.g. http://host:8000/v1 (or give base_urls)."
    )
    base_urls: list[str | ReplicaConfig] | None = Field(
        default=None,
        min_length=1,
        description="Replicas serving the same model, in place of base_url: each a URL or "
        "{url, max_concurrency}. Each request goes to the least busy replica; one that "
        "fails cools down while the others take its traffic.",
    )
    model: str = Field(description="The model name the server knows.")
    api_key_env: str | None = Field(
        default=None, description="NAME of the environment variable holding the API key."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="Extra HTTP headers (no secrets)."
    )
    max_concurrency: int = Field(
        default=16, ge=1, description="Most requests in flight (per replica)."
    )
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="Request rate limit per endpoint (replica); null for none."
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Seconds before an attempt ends.")
    max_retries: int = Field(default=4, ge=0, description="Retries after a failed attempt.")
    wait_budget_s: float | None = Field(
        default=WAIT_BUDGET_S,
        ge=0,
        description="Most seconds one request waits, over its attempts, for the model's "
        "servers to come out of a cooldown; a request that would wait longer skips the model "
        "at once (a collection waits up to one full cooldown, 30 s). null: wait as long as "
        "the cooldowns last.",
    )
    supports_n: bool | None = Field(
        default=None,
        description="Whether the server honours n; null to detect it (and cache what was learned).",
    )
    top_k: int | None = Field(
        default=None,
        ge=-1,
        description="Server-side top-k, sent with every request (llama.cpp reads 0 as off, "
        "vLLM -1); null: not sent, the server's own default applies.",
    )
    min_p: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Server-side min-p, sent with every request (0: off); null: not sent.",
    )
    repeat_penalty: float | None = Field(
        default=None,
        gt=0,
        description="Server-side repeat penalty (llama.cpp's name), sent with every "
        "request (1: off); null: not sent.",
    )
    stop: list[str] = Field(
        default_factory=list,
        description="Stop strings, sent with every request: the server ends a sample at the "
        "first and cuts it from the text (a base model without an end of turn needs one).",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="More fields merged into every request body, for a server's own "
        "settings (vLLM's repetition_penalty, say); not the fields slm-mux sets.",
    )

    @model_validator(mode="after")
    def _one_address(self) -> OpenAIConfig:
        if self.base_urls is None and self.base_url is None:
            raise key_error("base_url", "required for backend 'openai' (or base_urls: replicas)")
        if self.base_urls is not None and self.base_url is not None:
            raise key_error(
                "base_urls", f"model {self.name!r}: give base_url or base_urls, not both"
            )
        seen: set[str] = set()
        for i, (url, _) in enumerate(self.replicas()):
            key = "base_url" if self.base_urls is None else f"base_urls[{i}]"
            problem = url_problem(url)
            if problem is not None:
                raise key_error(key, f"model {self.name!r}: {problem}")
            shown = _without_credentials(url)
            if shown != url and self.api_key_env is not None:
                raise key_error(
                    key,
                    f"model {self.name!r}: give api_key_env or credentials in the URL, not both",
                )
            if shown in seen:
                raise key_error(key, f"model {self.name!r}: {shown} is listed twice")
            seen.add(shown)
        return self

    @model_validator(mode="after")
    def _check_stop(self) -> OpenAIConfig:
        if "" in self.stop:
            raise key_error("stop", f"model {self.name!r}: an empty stop string")
        return self

    @model_validator(mode="after")
    def _check_extra_body(self) -> OpenAIConfig:
        for key, value in self.extra_body.items():
            if key in ("top_k", "min_p", "repeat_penalty", "stop"):
                raise key_error(f"extra_body.{key}", f"model {self.name!r}: use the key {key}")
            if key in CONTROLLED:
                raise key_error(f"extra_body.{key}", f"model {self.name!r}: slm-mux sets it")
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise key_error(
                    f"extra_body.{key}", f"model {self.name!r}: not a JSON value ({value!r})"
                ) from None
        return self

    def server_sampling(self) -> ServerSampling:
        """What this entry pins on its server: its ``top_k``, ``min_p``,
        ``repeat_penalty``, ``stop`` and ``extra_body``, and ``top_p`` whenever the pool file sets
        it (here or in ``defaults``), even at 1."""
        named = {"top_k": self.top_k, "min_p": self.min_p, "repeat_penalty": self.repeat_penalty}
        fields: dict[str, Any] = {key: value for key, value in named.items() if value is not None}
        if self.stop:
            fields["stop"] = list(self.stop)
        return ServerSampling({**fields, **self.extra_body}, top_p=self.top_p is not None)

    def replicas(self) -> list[tuple[str, int]]:
        """Each server's URL (without a trailing ``/``) and concurrency limit."""
        entries = [self.base_url] if self.base_urls is None else self.base_urls
        return [
            (entry.rstrip("/"), self.max_concurrency)
            if isinstance(entry, str)
            else (entry.url.rstrip("/"), entry.max_concurrency or self.max_concurrency)
            for entry in entries
            if entry is not None
        ]

    def shared_by(self, workers: int) -> OpenAIConfig:
        """This entry with ``max_concurrency`` (each replica's too) and
        ``requests_per_minute`` divided among ``workers`` processes, so that together
        they keep to the pool file's limits (a concurrency of at least 1 each)."""
        if workers == 1:
            return self

        def share(limit: int) -> int:
            return max(limit // workers, 1)

        base_urls = self.base_urls
        if base_urls is not None:
            base_urls = [
                entry.model_copy(update={"max_concurrency": share(entry.max_concurrency)})
                if isinstance(entry, ReplicaConfig) and entry.max_concurrency is not None
                else entry
                for entry in base_urls
            ]
        rpm = self.requests_per_minute
        return self.model_copy(
            update={
                "max_concurrency": share(self.max_concurrency),
                "base_urls": base_urls,
                "requests_per_minute": None if rpm is None else rpm / workers,
            }
        )

    def identity(self) -> dict[str, Any]:
        """The served model's name (not its servers: replicas serve the same weights) and
        the fields it pins on them (:meth:`server_sampling`; entries without any keep their
        hash). ``top_p`` is hashed with the other settings, pinned or not."""
        fields = dict(self.server_sampling().fields)
        return {"model": self.model, **({"server_sampling": fields} if fields else {})}

    def build(self) -> OpenAICompatibleBackend:
        """The backend; reads the API key from ``api_key_env``, if set."""
        from slm_mux.backends.openai.client import OpenAICompatibleBackend

        return OpenAICompatibleBackend(
            self.name,
            base_url=self.replicas(),
            model=self.model,
            api_key_env=self.api_key_env,
            headers=self.headers,
            max_concurrency=self.max_concurrency,
            requests_per_minute=self.requests_per_minute,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            wait_budget_s=self.wait_budget_s,
            supports_n=self.supports_n,
            price=self.price.price() if self.price is not None else None,
            sampling=self.server_sampling(),
        )


def _without_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` part (a valid URL: see :func:`url_problem`)."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
