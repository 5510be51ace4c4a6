"""Training-serving skew at run time, the drift service's half (contract: flywheel_contracts.skew).

The service sees every served model input; it keeps, per version, a uniform sample of the rows that have a key
(reservoir sampling, Vitter's algorithm R, at most `skew_sample_rows`), which a skew check reads
(`GET /v1/skew/sample`), rebuilds from the offline store as training would, and answers with a column-by-column
result (`POST /v1/skew`). The latest result per version is kept for the report and the metrics.

The sample is filled on the analysis thread and read on the event loop, so it sits behind a lock; it holds
numbers only (model inputs, ids, times) and is bounded in rows and in versions. Neither the sample nor the
results are checkpointed: after a restart the sample refills from new traffic and the next check's result
replaces the old one.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict

import numpy as np

from flywheel_contracts.skew import ServedRow, SkewResult, SkewSample


class _Reservoir:
    __slots__ = ("seen", "keys", "times", "rows")

    def __init__(self) -> None:
        self.seen = 0
        self.keys: list[str] = []
        self.times: list[float] = []
        self.rows: list[np.ndarray] = []


class SkewStore:
    """Served-row samples and the latest skew result, per (model, version), bounded by `max_versions`."""

    def __init__(self, capacity: int, max_versions: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.max_versions = max_versions
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._samples: OrderedDict[tuple[str, str], _Reservoir] = OrderedDict()
        self._results: OrderedDict[tuple[str, str], SkewResult] = OrderedDict()

    def add(self, model: str, version: str, keys: list[str], time: float, x: np.ndarray) -> None:
        """Offer one record's rows (model inputs `x`, one key per row) to the version's sample."""
        if self.capacity <= 0 or not keys:
            return
        with self._lock:
            reservoir = self._samples.get((model, version))
            if reservoir is None:
                reservoir = self._samples[(model, version)] = _Reservoir()
                while len(self._samples) > self.max_versions:
                    self._samples.popitem(last=False)
            else:
                self._samples.move_to_end((model, version))
            for key, row in zip(keys, x, strict=True):
                reservoir.seen += 1
                if len(reservoir.keys) < self.capacity:
                    reservoir.keys.append(key)
                    reservoir.times.append(time)
                    reservoir.rows.append(np.array(row, dtype=np.float64))
                    continue
                slot = self._rng.randrange(reservoir.seen)
                if slot < self.capacity:
                    reservoir.keys[slot], reservoir.times[slot] = key, time
                    reservoir.rows[slot] = np.array(row, dtype=np.float64)

    def sample(self, model: str, version: str, columns: list[str], limit: int) -> SkewSample:
        """Up to `limit` sampled rows of the version, model inputs named by `columns` (non-finite values left
        out: a served input is always finite, so this only guards the JSON)."""
        with self._lock:
            reservoir = self._samples.get((model, version)) or _Reservoir()
            # A random subset of the reservoir, not its first slots: those hold the earliest rows more often.
            slots = self._rng.sample(range(len(reservoir.keys)), min(max(limit, 0), len(reservoir.keys)))
            picked = [(reservoir.keys[i], reservoir.times[i], reservoir.rows[i]) for i in sorted(slots)]
            seen = reservoir.seen
        rows = [ServedRow(id=key, time=time, inputs={name: float(v) for name, v in zip(columns, row, strict=False)
                                                      if np.isfinite(v)})
                for key, time, row in picked]
        return SkewSample(model=model, version=version, seen=seen, rows=rows)

    def record(self, result: SkewResult) -> None:
        with self._lock:
            self._results[(result.model, result.version)] = result
            self._results.move_to_end((result.model, result.version))
            while len(self._results) > self.max_versions:
                self._results.popitem(last=False)

    def result(self, model: str, version: str) -> SkewResult | None:
        with self._lock:
            return self._results.get((model, version))
