"""The HTTP client of the OpenAI-compatible backend: JSON bodies posted with ``aiohttp``.

The backend needs one thing from HTTP: post a chat-completion body, get the status,
the ``Retry-After`` header and the raw reply. It reads the JSON itself, so it needs
none of the ``openai`` SDK's request and response models. ``aiohttp`` (whose parser
is compiled) costs about a quarter of the CPU per request of ``httpx2``, the
library under the SDK: 0.20 against 0.78 ms per call at 200 in flight on this
project's machines, and it holds up at 10,000 requests in flight (see the README's
Speed section). Its pool keeps idle connections for reuse, up to the server's
concurrency limit. A proxy named in the environment (``HTTP_PROXY``, ``HTTPS_PROXY``,
``NO_PROXY``) is looked up once per client, not per request (aiohttp's own lookup reads
``~/.netrc`` and the environment in a thread on every request). Credentials in the
server's URL (``http://user:password@host/v1``) are sent as HTTP Basic auth instead of
the bearer key, and never as part of the URL.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from slm_mux import __version__

MAX_CONNECTIONS = 1000
"""Connections one client may hold at least (the ``openai`` SDK's default)."""

KEEPALIVE_S = 5.0
"""Seconds an idle connection stays open (the SDK's default)."""


class TransportError(Exception):
    """The request got no complete HTTP reply: refused, reset, closed or cut short.

    ``down``: the server could not be reached, or reset the connection (evidence
    that it is down, unlike a reply cut short or a connection closed mid-reply).
    """

    def __init__(self, reason: str, *, down: bool = False) -> None:
        super().__init__(reason)
        self.down = down


_DOWN_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET})


def _down(error: aiohttp.ClientError) -> bool:
    """Whether ``error`` says the server is unreachable or reset the connection."""
    if isinstance(error, aiohttp.ClientConnectorError):
        return True
    return isinstance(error, aiohttp.ClientOSError) and error.errno in _DOWN_ERRNOS


def url_secrets(url: str) -> list[str]:
    """The secrets that ``url``'s ``user:password@`` part puts on the wire or in text:
    the password (as written and decoded), ``user:password`` and the Basic auth token."""
    parsed = URL(url)
    auth = aiohttp.BasicAuth.from_url(parsed)
    if auth is None:
        return []
    token = auth.encode().split(" ", 1)[1]
    found = {auth.password, parsed.raw_password or "", f"{auth.login}:{auth.password}", token}
    return sorted((secret for secret in found if secret), key=len, reverse=True)


@dataclass(frozen=True)
class Reply:
    """An HTTP reply: status, reason phrase, headers (case-insensitive) and body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")


def _reason(error: aiohttp.ClientError) -> str:
    """One short line for a failed request."""
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the reply was cut short"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect to {error.host}:{error.port}: {error.strerror or error.os_error}"
    return str(error) or type(error).__name__


def connection_limit(max_concurrency: int) -> int:
    """Connections a client holds: ``max_concurrency``, and at least the SDK's 1,000."""
    return max(max_concurrency, MAX_CONNECTIONS)


class HttpClient:
    """Posts JSON to one server's ``/chat/completions`` with bearer ``api_key`` (or Basic
    auth from credentials in ``base_url``) and extra ``headers``, holding up to
    :func:`connection_limit` connections.

    Build it inside the event loop that uses it; :meth:`aclose` it there. Timeouts
    are the caller's.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        headers: Mapping[str, str] | None = None,
        max_concurrency: int = 0,
    ) -> None:
        signed = URL(base_url.rstrip("/") + "/chat/completions")
        basic = aiohttp.BasicAuth.from_url(signed)
        self.chat_url = signed.with_user(None)
        authorization = basic.encode() if basic is not None else f"Bearer {api_key}"
        self.limit = connection_limit(max_concurrency)
        self.proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        with contextlib.suppress(LookupError):  # LookupError: no proxy for this server
            self.proxy, self._proxy_auth = get_env_proxy_for_url(self.chat_url)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.limit, keepalive_timeout=KEEPALIVE_S),
            headers={
                "Accept": "application/json",
                "Authorization": authorization,
                "User-Agent": f"slm-mux/{__version__}",
                **(headers or {}),
            },
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def post_chat(self, body: bytes) -> Reply:
        """POST ``body`` (JSON) to the chat endpoint; :class:`TransportError` when no
        complete reply came back."""
        try:
            async with self._session.post(
                self.chat_url,
                data=body,
                headers={"Content-Type": "application/json"},
                proxy=self.proxy,
                proxy_auth=self._proxy_auth,
            ) as response:
                content = await response.read()
                return Reply(response.status, response.reason or "", response.headers, content)
        except aiohttp.ClientError as error:
            raise TransportError(_reason(error), down=_down(error)) from None

    async def aclose(self) -> None:
        """Close the connections."""
        await self._session.close()
