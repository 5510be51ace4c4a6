"""Where routes live: one source of truth that survives restarts and holds across replicas.

Every replica runs `RouteSource.run(apply)`: it loads the current routes, calls `apply` with the whole
set, and calls it again within a second of any change, whoever made it. The admin API writes through
`put`, which checks the writer's generation against the stored one (a stale one raises Conflict) and
stores generation + 1; the replica that took the write does not apply it directly but, like every other
replica, through `run`, so all replicas go through one path.

Implementations, one module each: `file` (a JSON file, polled; `make up` and tests) and `configmap`
(one ConfigMap in the release's namespace, watched through the Kubernetes API; the chart's default).
`make_source` is the only factory and refuses an unknown name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from flywheel_contracts import Route

from ._errors import ConfigError

if TYPE_CHECKING:
    from ._config import Settings

Apply = Callable[[Mapping[str, Route]], None]
"""Called with every model's route, the whole set, whenever it changes (and once at start)."""


class RouteSource(Protocol):
    async def run(self, apply: Apply) -> None:
        """Load, apply, then follow changes until cancelled. Transient failures are retried and logged,
        never raised; the last applied routes stay in force meanwhile."""

    async def put(self, route: Route) -> Route:
        """Store `route` if `route.generation` equals the stored generation (0: no route yet); returns the
        stored route (generation + 1, updatedAt set). Raises Conflict or RouteSourceError."""

    async def aclose(self) -> None:
        """Release connections and files."""


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
