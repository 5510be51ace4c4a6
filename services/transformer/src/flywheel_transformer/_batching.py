"""Taking a batch off a sender's queue: what the inference log (_events) and the feature stream (_stream) share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def take(queue: asyncio.Queue[T], limit: int, linger_s: float, taken: Callable[[], None]) -> list[T]:
    """One item (waiting for it), then what is queued, then what arrives within `linger_s`, up to `limit` items.

    `taken` is called as each item leaves the queue, so a sender cancelled while it lingers still knows what it
    held (the shutdown drain counts those as unsent)."""
    items = [await queue.get()]
    taken()
    deadline = time.monotonic() + linger_s
    while len(items) < limit:
        if queue.empty():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                break
        else:
            item = queue.get_nowait()
        items.append(item)
        taken()
    return items
