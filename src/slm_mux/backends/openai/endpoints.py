"""What each endpoint (base URL + model) is: its shared limits and what its server supports.

Backends on the same endpoint share one :class:`Endpoint`: one concurrency
limit, one requests-per-minute pacing (requests spaced ``60 / rpm`` seconds
apart) and what was learned about the server (whether it honours ``n``).

Whether a server honours ``n`` is learned from evidence, and only consistent
evidence counts: one full reply to an ``n``-request says it does; it takes
:data:`REFUSALS_TO_LEARN` refusals in a row (a reply with fewer choices, or a 400
that mentions ``n``), with no full reply between them, to conclude it does not.
A pool entry's ``supports_n`` always wins over what was learned.

What was learned is also kept in a small capability cache file
(:func:`cache_file`), so the next process starts with it instead of paying
round trips to learn it again; refusals add up across processes. An entry
expires :data:`CACHE_TTL_S` seconds (a day) after it was last changed, so a
server that was upgraded, or misjudged, is asked again. The file is written
off the event loop (:meth:`Endpoint.observe` runs the write in a thread) and is
safe across processes: a writer holds an exclusive lock on a side file while it
reads the current contents, merges its observation in, writes a temporary file
and ``os.replace``-s it over the cache, so readers never see a half-written
file and two processes writing at once lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from slm_mux.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writes stay atomic, merges best-effort
    fcntl = None  # type: ignore[assignment]

REFUSALS_TO_LEARN = 2
"""Refusals of ``n`` in a row (no full reply between) that mark a server as not honouring it."""
CACHE_TTL_S = 86_400.0
"""Seconds a cache entry lives after its last change: one day."""


def cache_file() -> Path:
    """Where learned capabilities are kept: ``$XDG_CACHE_HOME/slm-mux/endpoints.json``.

    ``XDG_CACHE_HOME`` defaults to ``~/.cache``. The file maps ``"<base_url> <model>"``
    to ``{"supports_n": true | false | null, "refusals": count, "at": unix time}``;
    delete it to forget.
    """
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "slm-mux" / "endpoints.json"


@dataclass(frozen=True)
class Learned:
    """What is known about one endpoint: whether it honours ``n`` (``None``: not yet
    known), the refusals of ``n`` in a row so far, and when this last changed (unix time)."""

    supports_n: bool | None
    refusals: int
    at: float

    def after(self, honoured: bool, now: float) -> Learned:
        """What is known after one more observation (``honoured``: a full reply)."""
        if honoured:
            return Learned(True, 0, now)
        refusals = self.refusals + 1
        return Learned(False if refusals >= REFUSALS_TO_LEARN else None, refusals, now)


UNKNOWN = Learned(None, 0, 0.0)


def _entry(value: object, now: float) -> Learned | None:
    """A cache file entry as :class:`Learned`, or ``None`` when malformed, from before
    entries had a time (a bare ``true``/``false``), or expired."""
    if not isinstance(value, dict):
        return None
    supports_n, refusals, at = value.get("supports_n"), value.get("refusals"), value.get("at")
    if (
        not (supports_n is None or isinstance(supports_n, bool))
        or not isinstance(refusals, int)
        or isinstance(refusals, bool)
        or refusals < 0
        or not isinstance(at, (int, float))
        or isinstance(at, bool)
        or not now - CACHE_TTL_S <= at <= now + CACHE_TTL_S
    ):
        return None
    return Learned(supports_n, refusals, float(at))


def read_cache(now: float | None = None) -> dict[str, Learned]:
    """The cache's live entries at unix time ``now`` (default: now); an unreadable
    file counts as empty."""
    now = time.time() if now is None else now
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    entries = {key: _entry(value, now) for key, value in data.items()}
    return {key: entry for key, entry in entries.items() if entry is not None}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` + ``.lock`` (blocking) while inside."""
    with open(path.with_name(path.name + ".lock"), "a", encoding="utf-8") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def record(key: str, honoured: bool, now: float | None = None) -> None:
    """Add one observation of ``key`` (``honoured``: a full reply to an ``n``-request)
    to the cache file under its lock, dropping expired entries and replacing the file
    atomically; an unwritable cache is skipped. Blocking: call it off the event loop."""
    now = time.time() if now is None else now
    path = cache_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            known = read_cache(now)
            before = known.get(key, UNKNOWN)
            if honoured and before.supports_n is True and before.refusals == 0:
                return  # nothing new
            known[key] = before.after(honoured, now)
            entries = {
                name: {"supports_n": e.supports_n, "refusals": e.refusals, "at": e.at}
                for name, e in known.items()
            }
            with tempfile.NamedTemporaryFile(
                "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
            ) as handle:
                json.dump(entries, handle, indent=1, sort_keys=True)
            os.replace(handle.name, path)


@dataclass(eq=False)
class Endpoint:
    """State shared by every backend that talks to one base URL + model.

    ``pinned``: ``supports_n`` comes from a pool entry and observations leave it alone.
    """

    key: str
    max_concurrency: int
    requests_per_minute: float | None
    supports_n: bool | None
    refusals: int = 0
    pinned: bool = False
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

    async def observe(self, honoured: bool) -> None:
        """Take one observation of the server (``honoured``: a full reply to an
        ``n``-request, else a refusal) into account, here and (in a thread) in the cache."""
        if self.pinned or (honoured and self.supports_n is True and self.refusals == 0):
            return
        learned = Learned(self.supports_n, self.refusals, 0.0).after(honoured, 0.0)
        self.supports_n, self.refusals = learned.supports_n, learned.refusals
        await asyncio.to_thread(record, self.key, honoured)


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
    what is known so far (in this process, else in the cache file) and pins it.
    """
    key = (base_url, model)
    found = _ENDPOINTS.get(key)
    if found is None:
        cache_key = f"{base_url} {model}"
        learned = read_cache().get(cache_key, UNKNOWN)
        found = Endpoint(
            cache_key,
            max_concurrency,
            requests_per_minute,
            learned.supports_n,
            refusals=learned.refusals,
        )
        _ENDPOINTS[key] = found
    if supports_n is not None:
        found.supports_n, found.pinned = supports_n, True
    if (found.max_concurrency, found.requests_per_minute) != (max_concurrency, requests_per_minute):
        raise InputError(
            f"model {name!r}: max_concurrency={max_concurrency}, requests_per_minute="
            f"{requests_per_minute} differ from another model on {base_url} ({model}): "
            f"{found.max_concurrency}, {found.requests_per_minute}"
        )
    return found
