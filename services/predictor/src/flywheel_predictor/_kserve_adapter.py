"""Every use of KServe's private names, in one place, checked at start-up.

KServe 0.21 gives no public way to serve its app with our own RESTServer (route filter, fast path, no
per-request logging), so the server reaches into a few private names. They may change in any KServe
release without notice; this module is the only one that touches them, and `check_private_names`
(called when the server is built, and by tests/test_kserve_adapter.py) names any that has gone, so an
upgrade fails at start and in CI with that name instead of an AttributeError mid-start or a silent change.

Used here:
- `ModelServer._register_and_check_atleast_one_model_is_ready(models)`: what `ModelServer.start` does
  with its models before serving; `start` is overridden, so it is called here.
- `ModelServer._serve()`: awaits every server in `ModelServer.servers`.
- `ModelServer._rest_multiprocess_server`: the multi-process server `ModelServer.stop` stops on SIGTERM.
- `RESTServerMultiProcess._rest_server`: the RESTServer each worker process runs; swapped for ours.
- `RESTServer._register_endpoints(app)` (overridden: only the served routes, see _routes) and
  `RESTServer._add_middlewares(app)` (overridden: no per-request TimingMiddleware).
"""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI
from kserve import ModelServer
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess
from kserve.protocol.rest.server import RESTServer

from ._routes import ServedRoutesOnly

PRIVATE_METHODS: dict[type, tuple[str, ...]] = {
    ModelServer: ("_register_and_check_atleast_one_model_is_ready", "_serve"),
    RESTServer: ("_register_endpoints", "_add_middlewares"),
}
"""Private methods this service calls or overrides, by the class that defines them."""

PRIVATE_ATTRIBUTES: dict[type, tuple[str, ...]] = {
    ModelServer: ("_rest_multiprocess_server",),
    RESTServerMultiProcess: ("_rest_server",),
}
"""Private attributes this service sets, by the class whose `__init__` sets them (looked for in its code)."""


def missing_private_names() -> list[str]:
    """`module.Class.name` for each private name KServe no longer has."""
    missing = [
        f"{cls.__module__}.{cls.__qualname__}.{name}"
        for cls, names in PRIVATE_METHODS.items()
        for name in names
        if not callable(getattr(cls, name, None))
    ]
    for cls, names in PRIVATE_ATTRIBUTES.items():
        assigned = cast(Any, cls).__init__.__code__.co_names  # attribute names the constructor touches
        missing += [f"{cls.__module__}.{cls.__qualname__}.{name}" for name in names if name not in assigned]
    return missing


def check_private_names() -> None:
    """Raise RuntimeError naming every private KServe name this service uses that is gone."""
    missing = missing_private_names()
    if missing:
        raise RuntimeError(
            f"KServe changed: {', '.join(missing)} no longer exist(s); this predictor was written against "
            "kserve 0.21. Review _kserve_adapter.py before upgrading KServe."
        )


def register_models(server: ModelServer, models: list[Any]) -> None:
    """What ModelServer.start does with its models: register the ready ones, start them."""
    server._register_and_check_atleast_one_model_is_ready(models)


def use_multiprocess_server(server: ModelServer, multiprocess: RESTServerMultiProcess, rest: RESTServer) -> None:
    """Have each worker of `multiprocess` run `rest`, and `server.stop` (SIGTERM) stop `multiprocess`."""
    multiprocess._rest_server = rest
    server._rest_multiprocess_server = multiprocess


async def serve_all(server: ModelServer) -> None:
    """Run every server in `server.servers` until they stop (SIGTERM/SIGINT)."""
    await server._serve()


def register_endpoints(rest: RESTServer, app: Any) -> None:
    """KServe's own route registration (on `app`, a FastAPI app or a stand-in with `include_router`)."""
    rest._register_endpoints(app)


class ServedRoutesRESTServer(RESTServer):
    """KServe's RESTServer registering only the routes in `_routes.SERVED_ROUTES`, without KServe's per-request
    TimingMiddleware (it logs one trace line per request; the Prometheus histograms carry the same)."""

    def _register_endpoints(self, app: FastAPI) -> None:
        served = ServedRoutesOnly(app)
        super()._register_endpoints(served)  # a stand-in for the app: KServe only calls include_router on it
        served.finish()

    def _add_middlewares(self, app: FastAPI) -> None:
        pass
