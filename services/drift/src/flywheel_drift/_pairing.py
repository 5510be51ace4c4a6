"""Joining the request and response events of one inference (same `ce-id`) into one record.

The halves may arrive in either order, from different sender tasks. A half waits, bounded in number and
in time; when its partner never comes, a request still yields a record (features without scores), a
response is dropped; both are counted, never silently lost. Pure.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ._events import EventHalf


@dataclass
class Record:
    """One inference's rows: model inputs, scores (None when unknown) and the keys labels join on."""

    inference_id: str
    model: str | None
    version: str | None
    time: float
    x: np.ndarray | None
    probabilities: np.ndarray | None
    keys: list[str]
    unseen: list[list[str]] | None = None
    """Per row, input fields never seen in training (from the response; None when it did not say)."""

    @property
    def rows(self) -> int:
        return len(self.keys)


def row_keys(inference_id: str, rows: int, ids: list[str] | None) -> list[str]:
    """Label join keys: the rows' own ids when the event carries them, else `<ce-id>` / `<ce-id>/<i>`."""
    if ids is not None:
        return list(ids)
    if rows == 1:
        return [inference_id]
    return [f"{inference_id}/{i}" for i in range(rows)]


def combine(request: EventHalf | None, response: EventHalf | None) -> Record:
    first = request or response
    assert first is not None
    ids = (request.row_ids if request is not None else None) or (response.row_ids if response else None)
    rows = request.rows if request is not None else response.rows  # type: ignore[union-attr]
    probabilities = response.probabilities if response is not None else None
    unseen = response.unseen if response is not None else None
    if probabilities is not None and request is not None and len(probabilities) != request.rows:
        probabilities = unseen = None  # a mismatched pair: keep the features, not scores we cannot align
    model = (response.model if response else None) or (request.model if request else None)
    version = (response.version if response else None) or (request.version if request else None)
    return Record(inference_id=first.id, model=model, version=version,
                  time=request.time if request is not None else first.time,
                  x=request.x if request is not None else None, probabilities=probabilities,
                  keys=row_keys(first.id, rows, ids), unseen=unseen)


class Pairer:
    def __init__(self, max_pending: int, timeout_s: float) -> None:
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.pending: OrderedDict[tuple[str, str], EventHalf] = OrderedDict()
        self.unpaired = 0
        self.mismatched = 0

    def add(self, half: EventHalf) -> list[Record]:
        """Offer a half; returns the records it completes (and any that the bound pushed out)."""
        other_role = "response" if half.role == "request" else "request"
        partner = self.pending.pop((half.id, other_role), None)
        if partner is not None:
            request, response = (half, partner) if half.role == "request" else (partner, half)
            if response.probabilities is not None and len(response.probabilities) != request.rows:
                self.mismatched += 1
            return [combine(request, response)]
        out: list[Record] = []
        key = (half.id, half.role)
        if key in self.pending:  # a repeated half (a sender retry): keep the first
            return out
        self.pending[key] = half
        while len(self.pending) > self.max_pending:
            _, oldest = self.pending.popitem(last=False)
            out.extend(self._give_up(oldest))
        return out

    def expire(self, now: float) -> list[Record]:
        """Give up on halves older than the timeout (by event time)."""
        out: list[Record] = []
        while self.pending:
            key, oldest = next(iter(self.pending.items()))
            if now - oldest.time < self.timeout_s:
                break
            del self.pending[key]
            out.extend(self._give_up(oldest))
        return out

    def _give_up(self, half: EventHalf) -> list[Record]:
        self.unpaired += 1
        return [combine(half, None)] if half.role == "request" else []
