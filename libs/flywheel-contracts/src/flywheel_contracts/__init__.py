"""Typed contracts between Flywheel services: what one side writes and another reads, in one place.

Pure pydantic, no numpy and no frameworks, so every service (and the controller) can depend on it.
"""

from __future__ import annotations

from .router_stats import Histogram, RouterStats, ShadowStats, VersionStats
from .routes import SCHEMA_VERSION, WEIGHT_RESOLUTION, Backend, Route, Stickiness

__all__ = [
    "SCHEMA_VERSION",
    "WEIGHT_RESOLUTION",
    "Backend",
    "Histogram",
    "Route",
    "RouterStats",
    "ShadowStats",
    "Stickiness",
    "VersionStats",
]
