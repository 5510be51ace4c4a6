"""One log line when calls to an upstream start failing and one when they succeed again, never one per request
(the metrics count every failure). The feature and predictor clients share it."""

from __future__ import annotations

import logging


class OutageLog:
    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what  # e.g. "feature lookups at http://features:6566"
        self.failing = False

    def failed(self, error: BaseException) -> None:
        if self.failing:
            return
        self.failing = True
        cause = f" ({error.__cause__!r})" if error.__cause__ is not None else ""
        self.log.warning("%s are failing: %s%s", self.what, error, cause)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            self.log.info("%s succeed again", self.what)
