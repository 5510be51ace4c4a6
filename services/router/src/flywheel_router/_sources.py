"""The one factory of route sources (`_store.RouteSource`): the settings name one, or start-up fails."""

from __future__ import annotations

from ._config import Settings
from ._errors import ConfigError
from ._store import RouteSource


def make_source(settings: Settings) -> RouteSource:
    """The route source the settings name; an unknown name is a ConfigError, never a silent default."""
    if settings.route_source == "file":
        from ._store_file import FileRouteSource

        return FileRouteSource(settings.routes_file, settings.route_poll_interval_s)
    if settings.route_source == "configmap":
        from ._store_kube import ConfigMapRouteSource

        return ConfigMapRouteSource.from_settings(settings)
    raise ConfigError(
        f"Config 'FLYWHEEL_ROUTER_ROUTE_SOURCE' has value {settings.route_source!r}: expected file or configmap"
    )
