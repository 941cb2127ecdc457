"""Micro-batching for one in-process model: concurrent requests share padded batches.

A :class:`Batcher` owns one worker thread per loaded model, so one model's
batch never waits on another model's. Callers :meth:`~Batcher.submit` the
rows of a request (one per sample) from any event loop. The worker takes
what has queued up while it was busy, waits up to ``window_s`` for more
unless the limits are already reached, sorts the gathered rows by prompt
length and cuts them into batches of at most ``max_sequences`` rows and
``max_tokens`` padded tokens (rows x (longest prompt + largest budget)).
Every gathered batch runs before the next gathering, so no request waits
behind later ones. A request's rows may land in different batches; its
future resolves when the last one is done.

When a batch runs out of device memory it is split in two and each half
retried (reported through ``on_split``); only a single row that still does
not fit fails, and only its request. Any other error fails the requests of
that batch and no others.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from slm_mux.backends.decoding import Decoded, Row
from slm_mux.errors import BackendError

RunBatch = Callable[[list[Row]], list[Decoded]]
"""Decodes one batch of rows (e.g. :func:`slm_mux.backends.decoding.decode` on a model)."""


class OutOfMemory(BackendError):
    """Raised by a :data:`RunBatch` when its batch does not fit in device memory."""


@dataclass(eq=False)
class _Request:
    """One submitted request: its rows, their results so far, and the caller's future."""

    rows: list[Row]
    future: Future[list[Decoded]]
    results: dict[int, Decoded] = field(default_factory=dict)

    def deliver(self, position: int, decoded: Decoded) -> None:
        self.results[position] = decoded
        if len(self.results) == len(self.rows) and not self.future.done():
            self.future.set_result([self.results[i] for i in range(len(self.rows))])

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


_Slot = tuple[_Request, int]
"""A row to decode: its request and its position there."""


@dataclass(frozen=True)
class BatchStats:
    """What a batcher has run: batches, rows, and out-of-memory splits."""

    batches: int
    rows: int
    splits: int


class Batcher:
    """Gathers the rows of concurrent requests into batches for one model (see module doc)."""

    def __init__(
        self,
        name: str,
        run: RunBatch,
        *,
        window_s: float,
        max_sequences: int,
        max_tokens: int,
        on_split: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.window_s = window_s
        self.max_sequences = max_sequences
        self.max_tokens = max_tokens
        self._run = run
        self._on_split = on_split
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._batches = self._rows = self._splits = 0

    @property
    def stats(self) -> BatchStats:
        """Batches and rows run so far, and how often a batch was split for memory."""
        return BatchStats(self._batches, self._rows, self._splits)

    async def submit(self, rows: Sequence[Row]) -> list[Decoded]:
        """Decode ``rows`` (one request's samples) among whatever else is queued."""
        future: Future[list[Decoded]] = Future()
        self._ensure_worker()
        self._queue.put(_Request(list(rows), future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop the worker after the requests already queued, and wait until it has.

        A worker left running at interpreter exit can abort the process inside torch.
        """
        with self._start_lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join()

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name=f"slm-mux batcher {self.name}", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            gathered, stop = self._gather(first)
            slots = [
                (request, i)
                for request in gathered
                if request.future.set_running_or_notify_cancel()
                for i in range(len(request.rows))
            ]
            for batch in self.plan(slots):
                self._execute(batch)
            if stop:
                return

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        """``first`` and the requests queued behind it or within the window; and whether to stop."""
        gathered = [first]
        rows = len(first.rows)
        deadline = time.monotonic() + self.window_s
        while rows < self.max_sequences:
            try:
                wait = deadline - time.monotonic()
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return gathered, True
            gathered.append(item)
            rows += len(item.rows)
        return gathered, False

    def plan(self, slots: Sequence[_Slot]) -> list[list[_Slot]]:
        """``slots`` sorted by prompt length (stably) and cut into batches within the limits."""
        ordered = sorted(slots, key=lambda slot: len(slot[0].rows[slot[1]].prompt))
        batches: list[list[_Slot]] = []
        current: list[_Slot] = []
        longest = budget = 0
        for slot in ordered:
            row = slot[0].rows[slot[1]]
            grown_longest, grown_budget = max(longest, len(row.prompt)), max(budget, row.max_new)
            tokens = (len(current) + 1) * (grown_longest + grown_budget)
            if current and (len(current) >= self.max_sequences or tokens > self.max_tokens):
                batches.append(current)
                current, grown_longest, grown_budget = [], len(row.prompt), row.max_new
            current.append(slot)
            longest, budget = grown_longest, grown_budget
        if current:
            batches.append(current)
        return batches

    def _execute(self, batch: list[_Slot]) -> None:
        """Run ``batch`` (halving it on out-of-memory) and deliver or fail its rows."""
        live = [slot for slot in batch if not slot[0].future.done()]
        if not live:
            return
        try:
            decoded = self._run([request.rows[i] for request, i in live])
        except OutOfMemory as error:
            if len(live) == 1:
                live[0][0].fail(error)
                return
            self._splits += 1
            if self._on_split is not None:
                self._on_split(len(live))
            half = len(live) // 2
            self._execute(live[:half])
            self._execute(live[half:])
            return
        except Exception as error:  # one batch's failure must not stop the worker
            for request, _ in live:
                request.fail(error)
            return
        self._batches += 1
        self._rows += len(live)
        for (request, i), result in zip(live, decoded, strict=True):
            request.deliver(i, result)
