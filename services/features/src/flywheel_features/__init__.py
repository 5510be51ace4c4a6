"""Flywheel features service: Feast's own feature server over feature_repo/, with readiness and
Prometheus metrics, and the apply / materialize / historical commands the Makefile and tests run."""

from . import _metrics_dir

_metrics_dir.prepare()  # before anything imports prometheus_client or Feast (see _metrics_dir)

from ._config import Settings, load_settings  # noqa: E402
from ._errors import ConfigError, FeaturesError, NotReady, StoreError  # noqa: E402
from ._server import check_ready, create_app, serve  # noqa: E402
from ._store import apply, historical, history_end, materialize, open_store  # noqa: E402

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
