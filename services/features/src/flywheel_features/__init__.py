"""Flywheel features service: Feast's own feature server over feature_repo/, with readiness and
Prometheus metrics, and the apply / materialize / historical commands the Makefile and tests run."""

from ._config import Settings, load_settings
from ._errors import ConfigError, FeaturesError, NotReady, StoreError
from ._server import check_ready, create_app, serve
from ._store import apply, historical, history_end, materialize, open_store

__all__ = [
    "ConfigError",
    "FeaturesError",
    "NotReady",
    "Settings",
    "StoreError",
    "apply",
    "check_ready",
    "create_app",
    "historical",
    "history_end",
    "load_settings",
    "materialize",
    "open_store",
    "serve",
]
