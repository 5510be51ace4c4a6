"""Shadow traffic off the response path: a bounded queue and a fixed set of workers.

`submit` never waits: when the queue is full the copy is dropped and counted, so a slow or dead candidate
can never delay, queue up or fail a caller. Each worker sends one copy at a time to the candidate, with
its own (short) timeout, and hands the result to `record` (the proxy compares it with the stable's answer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ._upstream import Answer, Headers, UpstreamFailure, Upstreams

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


class Shadow:
    def __init__(self, upstreams: Upstreams, workers: int, queue_size: int, timeout_s: float, record: Record) -> None:
        self._upstreams = upstreams
        self._timeout_s = timeout_s
        self._record = record
        self._queue: asyncio.Queue[Copy] = asyncio.Queue(queue_size)
        self._workers_n = workers
        self._workers: list[asyncio.Task] = []

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"shadow-{i}") for i in range(self._workers_n)]

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
                self._record(copy, None, failure)
            except Exception:  # a bug must not kill the worker and silently stop shadowing
                log.exception("shadow request to %s failed unexpectedly", copy.url)
            else:
                self._record(copy, answer, None)
            finally:
                self._queue.task_done()

    async def aclose(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
