"""Where routes live: one source of truth that survives restarts and holds across replicas.

Every replica runs `RouteSource.run(apply)`: it loads the current routes, calls `apply` with the whole
set, and calls it again within a second of any change, whoever made it. The admin API writes through
`put`, which checks the writer's generation against the stored one (a stale one raises Conflict) and
stores generation + 1; the replica that took the write does not apply it directly but, like every other
replica, through `run`, so all replicas go through one path.

Implementations, one module each: `file` (a JSON file, polled; `make up` and tests) and `configmap`
(one ConfigMap in the release's namespace, watched through the Kubernetes API; the chart's default).
`_sources.make_source` is the only factory and refuses an unknown name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from flywheel_contracts import Route

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
