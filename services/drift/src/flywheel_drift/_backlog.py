"""Accepted-but-not-analysed work, for the 429 rule.

Request handlers (on the event loop) reserve work as they accept it and the processor thread releases it
once analysed, so the counts change from two threads. `+=` on an attribute is a read, an add and a write,
and a thread switch between them loses the other thread's update: a count that drifts up gives spurious
429s, one that drifts down hides the real backlog. Every change and the admission check therefore happen
under one lock, and admission checks and reserves in one step, so two requests cannot both pass a check
that only one of them fits.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class BacklogSnapshot:
    """The counts at one instant (never negative: every release matches a reservation)."""

    rows: int
    bytes: int
    events: int


class Backlog:
    def __init__(self, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._rows = 0
        self._bytes = 0
        self._events = 0

    def try_reserve(self, rows: int, size: int) -> bool:
        """Count one event of `rows` rows and `size` bytes as waiting, unless that would pass a limit."""
        with self._lock:
            if self._rows + rows > self.max_rows or self._bytes + size > self.max_bytes:
                return False
            self._rows += rows
            self._bytes += size
            self._events += 1
            return True

    def release(self, rows: int, size: int) -> None:
        """The event is analysed (or failed analysis, or was never persisted): no longer waiting."""
        with self._lock:
            self._rows -= rows
            self._bytes -= size
            self._events -= 1

    def snapshot(self) -> BacklogSnapshot:
        with self._lock:
            return BacklogSnapshot(self._rows, self._bytes, self._events)
