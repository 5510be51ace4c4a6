"""Cumulative figures per model and version, for `GET /v1/stats/{model}` (flywheel_contracts.RouterStats).

Counters only grow; a reader subtracts two snapshots of the same replica for its interval. Updates happen
on the event loop only (one thread), so plain integers need no lock. Versions are bounded: those the
current route names, plus `other` for pinned calls to any other version (a caller cannot grow the table).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timezone

from flywheel_contracts import Histogram, RouterStats, ShadowStats, VersionStats

LATENCY_BUCKETS = (
    0.001,
    0.002,
    *(float(f"{0.004 * 2 ** (k / 8):.4g}") for k in range(73)),  # 4 ms to 2.05 s, x1.09 a bucket
    5.0,
    10.0,  # the default upstream_timeout_s
    30.0,
)
"""78 buckets, x1.09 apart (Prometheus native-histogram schema 3) where an inference p99 lives: fine enough that
the controller's test of a p99 (requests surely slower than a bound, i.e. in buckets whose lower edge is above
it) sees a p99 30% above the stable's in 97% of rollouts; x1.19 a bucket sees it in 11%, a 1-2.5-5 ladder never
(bench/controller/README.md). Coarse below 4 ms and above 2 s, to keep the Prometheus series few."""
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
OTHER = "other"
MAX_VERSIONS = 16


class Buckets:
    """A histogram's per-bucket counts (the last bucket is +Inf)."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> Histogram:
        return Histogram(le=[*self.bounds, None], counts=list(self.counts), sum=self.sum, count=self.count)


@dataclass
class VersionCounters:
    requests: int = 0
    timeouts: int = 0
    connect_errors: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    predictions: int = 0
    declines: int = 0
    latency: Buckets = field(default_factory=lambda: Buckets(LATENCY_BUCKETS))
    scores: Buckets = field(default_factory=lambda: Buckets(SCORE_BUCKETS))

    def snapshot(self, role: str) -> VersionStats:
        return VersionStats(
            role=role,
            requests=self.requests,
            errors=self.status_5xx + self.timeouts + self.connect_errors,
            timeouts=self.timeouts,
            connect_errors=self.connect_errors,
            status_4xx=self.status_4xx,
            status_5xx=self.status_5xx,
            predictions=self.predictions,
            declines=self.declines,
            latency_seconds=self.latency.snapshot(),
            scores=self.scores.snapshot(),
        )


@dataclass
class ShadowCounters:
    candidate_version: str | None = None
    mirrored: int = 0
    dropped: int = 0
    skipped: int = 0
    compared: int = 0
    candidate_errors: int = 0
    predictions_compared: int = 0
    decision_mismatches: int = 0
    score_diff: Buckets = field(default_factory=lambda: Buckets(DIFF_BUCKETS))
    candidate_latency: Buckets = field(default_factory=lambda: Buckets(LATENCY_BUCKETS))

    def snapshot(self) -> ShadowStats:
        return ShadowStats(
            candidate_version=self.candidate_version,
            mirrored=self.mirrored,
            dropped=self.dropped,
            skipped=self.skipped,
            compared=self.compared,
            candidate_errors=self.candidate_errors,
            predictions_compared=self.predictions_compared,
            decision_mismatches=self.decision_mismatches,
            score_diff=self.score_diff.snapshot(),
            candidate_latency_seconds=self.candidate_latency.snapshot(),
        )


class ModelStats:
    """One model's counters on this replica."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.versions: dict[str, VersionCounters] = {}
        self.roles: dict[str, str] = {}
        self.shadow = ShadowCounters()

    def set_route(self, stable: str, candidate: str | None) -> None:
        """The current route's roles; versions that left the route keep their counters (bounded)."""
        self.roles = {stable: "stable"} if candidate is None else {stable: "stable", candidate: "candidate"}
        for version in self.roles:
            self.versions.setdefault(version, VersionCounters())
        if len(self.versions) > MAX_VERSIONS:
            for version in [v for v in self.versions if v not in self.roles and v != OTHER][
                : len(self.versions) - MAX_VERSIONS
            ]:
                del self.versions[version]
        if candidate is not None and candidate != self.shadow.candidate_version:
            self.shadow = ShadowCounters(candidate_version=candidate)

    def key(self, version: str) -> str:
        """The version's own counters if the route names it (or it already has some), else `other`."""
        return version if version in self.versions else OTHER

    def counters(self, version: str) -> VersionCounters:
        key = self.key(version)
        found = self.versions.get(key)
        if found is None:
            found = self.versions[key] = VersionCounters()
        return found

    def snapshot(self, replica: str, started_at: datetime) -> RouterStats:
        return RouterStats(
            model=self.model,
            replica=replica,
            started_at=started_at,
            timestamp=datetime.now(timezone.utc),
            versions={v: c.snapshot(self.roles.get(v, "pinned")) for v, c in self.versions.items()},
            shadow=self.shadow.snapshot(),
        )
