"""The router's figures for one model, as `GET /v1/stats/{model}` serves them to an analysis.

Everything is cumulative since the replica started (counters and histogram bucket counts never go down),
stamped with the time it was read and the replica's identity. A reader keeps the previous snapshot of each
replica and takes deltas for its interval, so the router keeps no window per reader; a changed `startedAt`
means the replica restarted and its counters began again from zero (as a Prometheus counter reset).

```json
{"schemaVersion": 1, "model": "fraud", "replica": "router-7c9-abcde", "startedAt": "...", "timestamp": "...",
 "versions": {"v1": {"role": "stable", "requests": 1200, "errors": 3, "timeouts": 1, "connectErrors": 0,
                     "status4xx": 7, "status5xx": 2, "predictions": 1200, "declines": 14,
                     "latencySeconds": {"le": [0.005, ...], "counts": [800, ...], "sum": 9.1, "count": 1200},
                     "scores": {"le": [0.05, ...], "counts": [...], "sum": 40.2, "count": 1200}}},
 "shadow": {"candidateVersion": "v2", "mirrored": 600, "dropped": 0, "skipped": 0, "compared": 590,
            "candidateErrors": 10, "predictionsCompared": 590, "decisionMismatches": 4,
            "scoreDiff": {"le": [...], "counts": [...], "sum": 1.2, "count": 590},
            "candidateLatencySeconds": {...}}}
```

Histogram `counts` are per bucket (not cumulative across buckets); the last bucket's bound is +Inf, written
as null.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Each model spells its config out (no shared variable), so that mypy's pydantic plugin sees populate_by_name.


class Histogram(BaseModel):
    """Counts per bucket with upper bounds `le` (the last None = +Inf), their sum and count."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    le: list[float | None]
    counts: list[int]
    sum: float = 0.0
    count: int = 0

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile q (None when empty or in the +Inf bucket)."""
        if self.count == 0:
            return None
        target, seen = q * self.count, 0
        for bound, n in zip(self.le, self.counts, strict=False):
            seen += n
            if seen >= target:
                return bound
        return None

    def minus(self, earlier: Histogram) -> Histogram:
        """This histogram's growth since `earlier` (same buckets)."""
        if earlier.le != self.le:
            raise ValueError("histograms with different buckets cannot be subtracted")
        return Histogram(
            le=self.le,
            counts=[a - b for a, b in zip(self.counts, earlier.counts, strict=False)],
            sum=self.sum - earlier.sum,
            count=self.count - earlier.count,
        )


class VersionStats(BaseModel):
    """What callers got from one version."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    role: Literal["stable", "candidate", "pinned", "unrouted"]
    requests: int = 0
    errors: int = Field(0, description="5xx answers, timeouts and connection failures.")
    timeouts: int = 0
    connect_errors: int = Field(0, alias="connectErrors")
    status_4xx: int = Field(0, alias="status4xx")
    status_5xx: int = Field(0, alias="status5xx")
    predictions: int = Field(0, description="Scored instances (a request may carry several).")
    declines: int = 0
    latency_seconds: Histogram = Field(alias="latencySeconds")
    scores: Histogram


class ShadowStats(BaseModel):
    """The candidate's answers to mirrored requests, compared with the stable's."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    candidate_version: str | None = Field(None, alias="candidateVersion")
    mirrored: int = Field(0, description="Requests queued for the candidate.")
    dropped: int = Field(0, description="Requests not mirrored because the shadow queue was full.")
    skipped: int = Field(0, description="Requests not mirrored while the candidate was failing (paused, back-off).")
    compared: int = Field(0, description="Pairs whose candidate answer was compared (or failed).")
    candidate_errors: int = Field(0, alias="candidateErrors")
    predictions_compared: int = Field(0, alias="predictionsCompared")
    decision_mismatches: int = Field(0, alias="decisionMismatches")
    score_diff: Histogram = Field(alias="scoreDiff", description="|candidate score - stable score| per prediction.")
    candidate_latency_seconds: Histogram = Field(alias="candidateLatencySeconds")


class RouterStats(BaseModel):
    """One replica's cumulative figures for one model."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: Literal[1] = Field(1, alias="schemaVersion")
    model: str
    replica: str
    started_at: datetime = Field(alias="startedAt")
    timestamp: datetime
    versions: dict[str, VersionStats]
    shadow: ShadowStats

    def to_json(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)
