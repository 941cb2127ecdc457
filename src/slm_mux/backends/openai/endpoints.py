"""What each endpoint (base URL + model) is: its shared limits and what its server supports.

Backends on the same endpoint share one :class:`Endpoint`: one concurrency
limit, one requests-per-minute pacing (requests spaced ``60 / rpm`` seconds
apart) and what was learned about the server (whether it honours ``n``).

What was learned is also kept in a small capability cache file
(:func:`cache_file`), so the next process starts with it instead of paying a
round trip to learn it again. The file is written off the event loop
(:meth:`Endpoint.learn` runs the write in a thread) and is safe across
processes: a writer holds an exclusive lock on a side file while it reads the
current contents, merges its entry in, writes a temporary file and
``os.replace``-s it over the cache, so readers never see a half-written file
and two processes writing at once lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from slm_mux.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writes stay atomic, merges best-effort
    fcntl = None  # type: ignore[assignment]


def cache_file() -> Path:
    """Where learned capabilities are kept: ``$XDG_CACHE_HOME/slm-mux/endpoints.json``.

    ``XDG_CACHE_HOME`` defaults to ``~/.cache``. The file maps
    ``"<base_url> <model>"`` to ``true`` or ``false`` (whether the server honours
    ``n``); delete it to forget.
    """
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "slm-mux" / "endpoints.json"


def read_cache() -> dict[str, bool]:
    """The cached ``n`` support per endpoint; an unreadable file counts as empty."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: value for key, value in data.items() if isinstance(value, bool)}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` + ``.lock`` (blocking) while inside."""
    with open(path.with_name(path.name + ".lock"), "a", encoding="utf-8") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def write_cache(key: str, supports_n: bool) -> None:
    """Merge ``key: supports_n`` into the cache file under its lock, replacing the file
    atomically; an unwritable cache is skipped. Blocking: call it off the event loop."""
    path = cache_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            known = read_cache()
            if known.get(key) is supports_n:
                return
            known[key] = supports_n
            with tempfile.NamedTemporaryFile(
                "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
            ) as handle:
                json.dump(known, handle, indent=1, sort_keys=True)
            os.replace(handle.name, path)


@dataclass(eq=False)
class Endpoint:
    """State shared by every backend that talks to one base URL + model."""

    key: str
    max_concurrency: int
    requests_per_minute: float | None
    supports_n: bool | None
    next_slot: float = 0.0
    semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def semaphore(self) -> asyncio.Semaphore:
        """The concurrency limit for the running event loop."""
        loop = asyncio.get_running_loop()
        if loop not in self.semaphores:
            self.semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        return self.semaphores[loop]

    async def pace(
        self, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]
    ) -> float:
        """Wait for this request's slot under the requests-per-minute limit; the seconds
        waited (measured and slept with the caller's ``clock`` and ``sleep``)."""
        if self.requests_per_minute is None:
            return 0.0
        now = clock()
        slot = max(now, self.next_slot)
        self.next_slot = slot + 60.0 / self.requests_per_minute
        if slot > now:
            await sleep(slot - now)
        return slot - now

    def may_honour_n(self) -> bool:
        """Whether the server is not known to refuse ``n > 1``."""
        return self.supports_n is not False

    async def learn(self, supports_n: bool) -> None:
        """Record whether the server honours ``n``, here and (in a thread) in the cache file."""
        self.supports_n = supports_n
        await asyncio.to_thread(write_cache, self.key, supports_n)


_ENDPOINTS: weakref.WeakValueDictionary[tuple[str, str], Endpoint] = weakref.WeakValueDictionary()


def endpoint(
    name: str,
    base_url: str,
    model: str,
    max_concurrency: int,
    requests_per_minute: float | None,
    supports_n: bool | None,
) -> Endpoint:
    """The shared state of ``base_url`` + ``model`` (for model ``name``).

    Limits must agree across backends; a configured ``supports_n`` overrides
    what is known so far (in this process, else in the cache file).
    """
    key = (base_url, model)
    found = _ENDPOINTS.get(key)
    if found is None:
        cache_key = f"{base_url} {model}"
        if supports_n is None:
            supports_n = read_cache().get(cache_key)
        found = Endpoint(cache_key, max_concurrency, requests_per_minute, supports_n)
        _ENDPOINTS[key] = found
        return found
    if supports_n is not None:
        found.supports_n = supports_n
    if (found.max_concurrency, found.requests_per_minute) != (max_concurrency, requests_per_minute):
        raise InputError(
            f"model {name!r}: max_concurrency={max_concurrency}, requests_per_minute="
            f"{requests_per_minute} differ from another model on {base_url} ({model}): "
            f"{found.max_concurrency}, {found.requests_per_minute}"
        )
    return found
