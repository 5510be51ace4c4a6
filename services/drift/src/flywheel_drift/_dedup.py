"""Recently seen CloudEvent ids: a retrying sender's second delivery is acknowledged, not analysed twice.

A logger that timed out waiting for the 202 posts the same event again (same `ce-source`, `ce-id` and
`ce-type`). The request and the response of one inference share `ce-id` but differ in `ce-type`, so they
are never duplicates of each other. Memory is bounded two ways: at most `max_ids` keys (oldest forgotten
first) and none older than `horizon_s` seconds; a retry after that is analysed again, which is the
documented horizon. Pure; one instance is used from the event loop, which checks and marks in one step.
"""

from __future__ import annotations

from collections import OrderedDict

Key = tuple[str, str, str]


class RecentIds:
    def __init__(self, max_ids: int, horizon_s: float) -> None:
        self.max_ids = max_ids
        self.horizon_s = horizon_s
        self._seen: OrderedDict[Key, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_mark(self, key: Key, now: float) -> bool:
        """True when `key` was marked within the horizon (a duplicate); else mark it and return False."""
        self._expire(now)
        if key in self._seen:
            return True
        self._seen[key] = now
        while len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)
        return False

    def forget(self, key: Key) -> None:
        """Unmark a key whose event was not kept after all (the spool refused it), so a retry is accepted."""
        self._seen.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, marked = next(iter(self._seen.items()))
            if now - marked < self.horizon_s:
                return
            del self._seen[key]
