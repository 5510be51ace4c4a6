"""The drift service's results and alerts: the contract lives in flywheel_contracts.drift (shared with the
rollout controller and the trainer, which read them); re-exported here for the service's own modules."""

from flywheel_contracts.drift import (
    SCHEMA_VERSION,
    Alert,
    Backlog,
    Category,
    Detector,
    Episode,
    FeatureDrift,
    FeatureLast,
    FeatureReport,
    MMDResult,
    OnlineEvidence,
    OnlineReport,
    PerformanceResult,
    Report,
    Verdict,
    VersionReport,
    WindowEvidence,
    iso,
)

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "Backlog",
    "Category",
    "Detector",
    "Episode",
    "FeatureDrift",
    "FeatureLast",
    "FeatureReport",
    "MMDResult",
    "OnlineEvidence",
    "OnlineReport",
    "PerformanceResult",
    "Report",
    "Verdict",
    "VersionReport",
    "WindowEvidence",
    "iso",
]
