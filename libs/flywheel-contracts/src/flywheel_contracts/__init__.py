"""Typed contracts between Flywheel services: what one side writes and another reads, in one place.

Pure pydantic, no numpy and no frameworks, so every service (and the controller) can depend on it.
"""

from __future__ import annotations

from .rollout import (
    FINALIZER,
    AnalysisRun,
    AnalysisSpec,
    Condition,
    DecisionRecord,
    EvidenceState,
    Intent,
    IntentAction,
    MetricResult,
    MetricSpec,
    ModelRollout,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Phase,
    Step,
    Verdict,
    parse_duration,
)
from .router_stats import Histogram, RouterStats, ShadowStats, VersionStats
from .routes import SCHEMA_VERSION, WEIGHT_RESOLUTION, Backend, Route, Stickiness

__all__ = [
    "FINALIZER",
    "SCHEMA_VERSION",
    "WEIGHT_RESOLUTION",
    "AnalysisRun",
    "AnalysisSpec",
    "Backend",
    "Condition",
    "DecisionRecord",
    "EvidenceState",
    "Histogram",
    "Intent",
    "IntentAction",
    "MetricResult",
    "MetricSpec",
    "ModelRollout",
    "ModelRolloutSpec",
    "ModelRolloutStatus",
    "Phase",
    "Route",
    "RouterStats",
    "ShadowStats",
    "Step",
    "Stickiness",
    "Verdict",
    "VersionStats",
    "parse_duration",
]
