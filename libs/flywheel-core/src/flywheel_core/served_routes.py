"""Which of KServe's HTTP routes a Flywheel server (predictor, transformer) answers: inference, health, model
metadata and metrics, nothing else. Shared by both; framework-free (the app and routers are duck-typed).

KServe's RESTServer registers more than a model server needs, and some of it changes state: the model
repository extension (`POST /v2/repository/models/<m>/load|unload`) lets anyone who reaches the port
unload the model (readiness then 503 and every prediction 404 while liveness stays 200). Also registered:
V1 `:explain` (there is no explainer), OpenAI and time-series routes (only for such models; none here),
and FastAPI's `/openapi.json` (and `/docs` when enabled), which would advertise routes this server does
not serve. None of them is registered here, so each answers 404.

How: KServe builds each group of routes as an APIRouter and hands it to `app.include_router`. Its
`_register_endpoints` (a private name, overridden in each service's `_kserve_adapter.ServedRoutesRESTServer`)
gets a stand-in app whose `include_router` keeps only the routes in SERVED_ROUTES. If KServe calls anything else
on the app, or stops registering a served route, the server refuses to start (AttributeError / RuntimeError), and
each service's `tests/test_routes.py` pins KServe's whole route table, so an upgrade that adds or renames a route fails
there first.
"""

from __future__ import annotations

from typing import Any

SERVED_ROUTES = frozenset(
    {
        # health
        "/",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/versions/{model_version}/ready",
        # metadata
        "/v1/models",
        "/v1/models/{model_name}",
        "/v2",
        "/v2/models",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/versions/{model_version}",
        # inference
        "/v1/models/{model_name}:predict",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
        # metrics (the predictor's fast path answers it first; KServe's route stays for FAST_PATH=false parity)
        "/metrics",
    }
)
"""Path templates, as KServe 0.21 registers them, of the routes this server answers."""


class ServedRoutesOnly:
    """Stands in for the FastAPI app while KServe registers its routes: includes only `served` ones."""

    def __init__(self, app: Any, served: frozenset[str] = SERVED_ROUTES) -> None:
        self.app = app
        self.served = served
        self.kept: set[str] = set()
        self.dropped: set[str] = set()

    def include_router(self, router: Any, **kwargs: Any) -> None:
        keep = [route for route in router.routes if route.path in self.served]
        self.kept.update(route.path for route in keep)
        self.dropped.update(route.path for route in router.routes if route.path not in self.served)
        router.routes[:] = keep  # a fresh router, not included anywhere yet
        self.app.include_router(router, **kwargs)

    def finish(self) -> None:
        """Drop the app's own routes outside `served` (FastAPI's /openapi.json, /docs) and check that every
        served route was registered."""
        routes = self.app.router.routes
        own = [route for route in routes if getattr(route, "path", None) is not None]  # included routers have none
        self.dropped.update(route.path for route in own if route.path not in self.served)
        routes[:] = [route for route in routes if getattr(route, "path", None) is None or route.path in self.served]
        self.app.openapi_url = None
        missing = self.served - self.kept
        if missing:
            raise RuntimeError(
                f"KServe no longer registers {sorted(missing)}: its routes changed; "
                "review flywheel_core.served_routes.SERVED_ROUTES"
            )
