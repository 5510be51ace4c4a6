"""Inference threads: score rows off the event loop for less than run_in_executor costs.

A single-row session.run on a small model takes a few microseconds; handing it to a thread with
`loop.run_in_executor` costs several times that (a concurrent.futures Future, its lock and callbacks,
wrap_future and chaining on the loop side), all of it Python holding the GIL on both threads. This lane
keeps only a SimpleQueue in and one `call_soon_threadsafe` out. ONNX Runtime releases the GIL while it
computes, so the loop keeps serving meanwhile.

Opportunistic batching: when a thread picks up work and more requests are already queued (several
connections in flight), it stacks their rows, up to `max_rows`, into one session.run and splits the
result. It never waits for a batch to fill, so a lone request goes straight through; under load one run
and one wake-up of the loop serve many requests. The model must score rows independently — true of
any inference graph mapping [n, D] to [n, 1] row by row, which is the model contract. If a stacked run
fails, each request is run alone so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from time import perf_counter

import numpy as np

_STOP = object()

Item = tuple[asyncio.AbstractEventLoop, asyncio.Future, np.ndarray]
Outcome = tuple[asyncio.Future, tuple[np.ndarray, float] | None, BaseException | None]


class InferenceLane:
    """`await lane.score(rows)` -> (scores, seconds in session.run), computed on `threads` daemon threads."""

    def __init__(
        self, run: Callable[[np.ndarray], np.ndarray], threads: int, max_rows: int, name: str = "inference"
    ) -> None:
        self._run = run
        self._max_rows = max_rows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def score(self, rows: np.ndarray) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((loop, future, rows))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)

    def _work(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            item = get()
            if item is _STOP:
                return
            batch: list[Item] = [item]
            rows = len(item[2])
            stop = False
            while rows < self._max_rows:
                try:
                    more = get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
                rows += len(more[2])
            self._deliver(self._score(batch))
            if stop:
                return

    def _score(self, batch: list[Item]) -> list[tuple[asyncio.AbstractEventLoop, Outcome]]:
        if len(batch) > 1:
            try:
                started = perf_counter()
                out = self._run(np.concatenate([rows for _, _, rows in batch]))
                seconds = perf_counter() - started
            except Exception:  # find out whose request it was by running each alone
                pass
            else:
                outcomes: list[tuple[asyncio.AbstractEventLoop, Outcome]] = []
                start = 0
                for loop, future, rows in batch:
                    stop = start + len(rows)
                    outcomes.append((loop, (future, (out[start:stop], seconds), None)))
                    start = stop
                return outcomes
        outcomes = []
        for loop, future, rows in batch:
            result: tuple[np.ndarray, float]
            try:
                started = perf_counter()
                result = (self._run(rows), perf_counter() - started)
                outcomes.append((loop, (future, result, None)))
            except BaseException as error:  # handed to the awaiting request, which maps it
                outcomes.append((loop, (future, None, error)))
        return outcomes

    @staticmethod
    def _deliver(outcomes: list[tuple[asyncio.AbstractEventLoop, Outcome]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
        for loop, outcome in outcomes:
            by_loop.setdefault(loop, []).append(outcome)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop closed during shutdown: nobody is waiting any more
                pass


def _settle(outcomes: list[Outcome]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():  # the client went away while its rows were being scored
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
