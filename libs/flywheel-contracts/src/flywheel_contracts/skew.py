"""Training-serving skew at run time: what was served, against what training would have joined.

The drift service keeps a bounded uniform sample of the model inputs it was sent (with their ids and event
times) for each version; a skew check (`python -m flywheel_trainer skew`, the chart's `skew` CronJob) reads it
(`GET /v1/skew/sample`, `SkewSample`), rebuilds each row's model input the way training builds it (the
point-in-time join of the offline store, the same vectorisation), compares them column by column and posts
the counts back (`POST /v1/skew`, `SkewResult`). The drift service serves the latest result per version in its
report and as metrics. Here in flywheel-contracts so the two sides share one definition.

Every body carries `schema_version`; a reader refuses a version it does not know rather than guess. Pure:
pydantic only.
"""

from __future__ import annotations

import math
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION: Final = 1
MAX_SAMPLE_ROWS: Final = 10_000
"""The most rows one sample may hold (the drift service's setting is capped here too)."""
MAX_EXAMPLES: Final = 5
"""Mismatched rows named per feature in a result: enough to look one up, never a dump of model inputs."""
DEFAULT_TOLERANCE: Final = 1e-4
"""Relative tolerance of a match (float32 model inputs: about 1e-7 of rounding, far below any real skew)."""

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ServedRow(BaseModel):
    """One model input as it was served: the row's id (the transaction id, or `<inference id>/<row>`), its
    event time (seconds since the epoch) and the model input by column name (metadata `input.columns`)."""

    model_config = _STRICT

    id: str = Field(min_length=1, max_length=256)
    time: float
    inputs: dict[str, float]

    @field_validator("time")
    @classmethod
    def _finite_time(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("time must be a finite number of seconds since the epoch")
        return value


class SkewSample(BaseModel):
    """`GET /v1/skew/sample?model=M&version=V`: up to `limit` served rows of one version, a uniform sample of
    the rows with ids the service was sent since it started (reservoir sampling)."""

    model_config = _STRICT

    schema_version: Literal[1] = SCHEMA_VERSION
    model: str
    version: str
    seen: int = Field(ge=0)
    """Rows with ids the sample was drawn from."""
    rows: list[ServedRow] = Field(max_length=MAX_SAMPLE_ROWS)


class Example(BaseModel):
    """One mismatched row of one feature: what was served, and what training would have joined."""

    model_config = _STRICT

    id: str
    served: float | None
    offline: float | None


class FeatureSkew(BaseModel):
    """One model-input column over the compared rows."""

    model_config = _STRICT

    compared: int = Field(ge=0)
    mismatched: int = Field(ge=0)
    examples: list[Example] = Field(default_factory=list, max_length=MAX_EXAMPLES)


class SkewResult(BaseModel):
    """`POST /v1/skew`: one check of one version. `rows` were compared; `unmatched` rows of the sample were not
    (their transaction is not in the offline data yet, or their id names no transaction)."""

    model_config = _STRICT

    schema_version: Literal[1] = SCHEMA_VERSION
    model: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=128)
    checked_at: float
    rows: int = Field(ge=0)
    unmatched: int = Field(ge=0)
    tolerance: float = Field(DEFAULT_TOLERANCE, ge=0)
    features: dict[str, FeatureSkew] = Field(max_length=1024)

    @property
    def mismatched_features(self) -> list[str]:
        """Columns with at least one mismatch, most mismatched first."""
        return sorted((n for n, f in self.features.items() if f.mismatched),
                      key=lambda n: (-self.features[n].mismatched, n))


def matches(served: float | None, offline: float | None, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether a served value equals the offline one within `tolerance`, relative to max(1, |offline|); a
    missing value matches only a missing one."""
    if served is None or offline is None:
        return served is None and offline is None
    if math.isnan(served) or math.isnan(offline):
        return math.isnan(served) and math.isnan(offline)
    return abs(served - offline) <= tolerance * max(1.0, abs(offline))
