"""Every use of KServe's private names, in one place, checked at start-up.

KServe 0.21 gives no public way to build the REST server (its ModelServer hard-codes 0.0.0.0 and registers
every route), so the server reaches into three private names. They may change in any KServe release
without notice; this module is the only one that touches them, and `check_private_names` (called when
the server is built, and by tests/test_kserve_adapter.py) names any that has gone, so an upgrade fails
at start and in CI with that name instead of an AttributeError deep in a request or a silent change.

Used here:
- `ModelServer._register_and_check_atleast_one_model_is_ready(models)`: what `ModelServer.start` does
  with its models before serving; `start` is overridden (to serve our REST server), so it is called here.
- `ModelServer._serve()`: awaits every server in `ModelServer.servers`.
- `RESTServer._register_endpoints(app)`: registers KServe's routes on the app; overridden to keep only
  the served ones (`_routes.ServedRoutesOnly`).

And one of FastAPI's: since 0.13x `include_router` keeps each included router as one entry whose
`original_router` holds its routes; `served_routes` reads them (for the 405 check, _methods) and refuses to
start if it cannot find every served route that way.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from kserve import ModelServer
from kserve.protocol.rest.server import RESTServer

from ._routes import SERVED_ROUTES, ServedRoutesOnly

PRIVATE_NAMES: dict[type, tuple[str, ...]] = {
    ModelServer: ("_register_and_check_atleast_one_model_is_ready", "_serve"),
    RESTServer: ("_register_endpoints",),
}
"""The KServe private names this service uses, by the class that defines them."""


def missing_private_names() -> list[str]:
    """`Class.name` for each private name KServe no longer has."""
    return [
        f"{cls.__module__}.{cls.__qualname__}.{name}"
        for cls, names in PRIVATE_NAMES.items()
        for name in names
        if not callable(getattr(cls, name, None))
    ]


def check_private_names() -> None:
    """Raise RuntimeError naming every private KServe name this service uses that is gone."""
    missing = missing_private_names()
    if missing:
        raise RuntimeError(
            f"KServe changed: {', '.join(missing)} no longer exist(s); this transformer was written against "
            "kserve 0.21. Review _kserve_adapter.py before upgrading KServe."
        )


def register_models(server: ModelServer, models: list[Any]) -> None:
    """What ModelServer.start does with its models: register the ready ones, start them."""
    server._register_and_check_atleast_one_model_is_ready(models)


async def serve_all(server: ModelServer) -> None:
    """Run every server in `server.servers` until they stop (SIGTERM/SIGINT)."""
    await server._serve()


def register_endpoints(rest: RESTServer, app: Any) -> None:
    """KServe's own route registration (on `app`, a FastAPI app or a stand-in with `include_router`)."""
    rest._register_endpoints(app)


class ServedRoutesRESTServer(RESTServer):
    """KServe's RESTServer registering only the routes in `_routes.SERVED_ROUTES`."""

    def _register_endpoints(self, app: FastAPI) -> None:
        served = ServedRoutesOnly(app)
        super()._register_endpoints(served)  # a stand-in for the app: KServe only calls include_router on it
        served.finish()


def served_routes(app: FastAPI) -> list[Any]:
    """The app's routes (with `path`, `path_regex`, `methods`), included routers flattened; raises RuntimeError
    when a served route cannot be found this way (a FastAPI upgrade changed how routers are included)."""
    found: list[Any] = []
    pending = list(app.router.routes)
    while pending:
        route = pending.pop(0)
        included = getattr(route, "original_router", None)
        if included is not None:
            pending.extend(included.routes)
        elif getattr(route, "path_regex", None) is not None and getattr(route, "methods", None):
            found.append(route)
    missing = SERVED_ROUTES - {route.path for route in found}
    if missing:
        raise RuntimeError(
            f"cannot find the served routes {sorted(missing)} in the FastAPI app: FastAPI changed how it keeps "
            "included routers; review _kserve_adapter.served_routes"
        )
    return found
