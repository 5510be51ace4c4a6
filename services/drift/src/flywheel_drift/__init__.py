"""Flywheel drift detection: a CloudEvents sink for inference logs that tests live traffic against each
model version's training reference (per feature, multivariate and online), tracks delayed-label
performance, exports Prometheus metrics and sends alerts. See services/drift/README.md.
"""

from ._config import Settings, load_settings
from ._errors import (
    Backlogged,
    ConfigError,
    DriftError,
    InvalidEvent,
    NotReady,
    ReferenceUnavailable,
    RequestError,
    UnknownModel,
)
from ._results import Alert, Category, Detector, Report, Verdict, VersionReport
from ._server import create_app
from ._service import DriftService
from ._state import compute_state, write_state

__all__ = [
    "Alert",
    "Backlogged",
    "Category",
    "ConfigError",
    "Detector",
    "DriftError",
    "DriftService",
    "InvalidEvent",
    "NotReady",
    "ReferenceUnavailable",
    "Report",
    "RequestError",
    "Settings",
    "UnknownModel",
    "Verdict",
    "VersionReport",
    "compute_state",
    "create_app",
    "load_settings",
    "write_state",
]
