"""Shadow traffic off the response path: a bounded queue and a fixed set of workers.

`submit` never waits: when the queue is full the copy is dropped and counted, so a slow or dead candidate
can never delay, queue up or fail a caller. Each worker sends one copy at a time to the candidate, with
its own (short) timeout, and hands the result to `record` (the proxy compares it with the stable's answer).

A candidate that refuses connections or times out is paused: no copies are made for it for a back-off
that doubles from 0.25 s to 5 s while failures continue and resets on the first answer. Without it, a dead
candidate made every mirrored request pay for a failed connection (bench/router: +100 us of CPU each);
the skipped copies are counted, so the candidate's absence is still visible.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._upstream import Answer, Headers, UpstreamClient, UpstreamFailure

log = logging.getLogger("flywheel_router.shadow")


@dataclass(frozen=True, slots=True)
class Copy:
    """One mirrored request, with what the stable answered (`context`, opaque here)."""

    model: str
    version: str
    method: str
    url: str
    headers: Headers
    body: bytes
    context: object


Record = Callable[[Copy, Answer | None, UpstreamFailure | None], None]

FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 5.0


class Shadow:
    def __init__(
        self, upstreams: UpstreamClient, workers: int, queue_size: int, timeout_s: float, record: Record
    ) -> None:
        self._upstreams = upstreams
        self._timeout_s = timeout_s
        self._record = record
        self._queue: asyncio.Queue[Copy] = asyncio.Queue(queue_size)
        self._workers_n = workers
        self._workers: list[asyncio.Task] = []
        self._paused_until: dict[tuple[str, str], float] = {}
        self._backoff: dict[tuple[str, str], float] = {}

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"shadow-{i}") for i in range(self._workers_n)]

    def accepting(self, model: str, version: str) -> bool:
        """False while the candidate is paused after failures (no copy should be made)."""
        until = self._paused_until.get((model, version))
        return until is None or time.monotonic() >= until

    def _failed(self, copy: Copy, failure: UpstreamFailure) -> None:
        key = (copy.model, copy.version)
        backoff = min(MAX_BACKOFF_S, 2 * self._backoff.get(key, FIRST_BACKOFF_S / 2))
        if key not in self._backoff:
            log.warning("shadow candidate %s %s failed (%s): pausing copies, retrying with back-off", *key, failure)
        self._backoff[key] = backoff
        self._paused_until[key] = time.monotonic() + backoff

    def _answered(self, copy: Copy) -> None:
        key = (copy.model, copy.version)
        if self._backoff.pop(key, None) is not None:
            self._paused_until.pop(key, None)
            log.info("shadow candidate %s %s answers again: copies resume", *key)

    def submit(self, copy: Copy) -> bool:
        """Queue a copy; False (dropped) when the queue is full."""
        try:
            self._queue.put_nowait(copy)
        except asyncio.QueueFull:
            return False
        return True

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def _work(self) -> None:
        while True:
            copy = await self._queue.get()
            try:
                answer = await self._upstreams.send(copy.method, copy.url, copy.headers, copy.body, self._timeout_s)
            except UpstreamFailure as failure:
                self._failed(copy, failure)
                self._record(copy, None, failure)
            except Exception:  # a bug must not kill the worker and silently stop shadowing
                log.exception("shadow request to %s failed unexpectedly", copy.url)
            else:
                self._answered(copy)
                self._record(copy, answer, None)
            finally:
                self._queue.task_done()

    async def aclose(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
