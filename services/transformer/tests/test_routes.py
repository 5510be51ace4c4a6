"""KServe's route table, pinned: a KServe upgrade that adds, renames or drops a route fails here first.

The served routes themselves are tested against the real process in test_security.py.
"""

import pytest
from fastapi import FastAPI
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer

from flywheel_transformer._kserve_adapter import register_endpoints
from flywheel_transformer._routes import SERVED_ROUTES, ServedRoutesOnly

KSERVE_ROUTES_NOT_SERVED = {
    "/v1/models/{model_name}:explain",
    "/v2/repository/models/{model_name}/load",
    "/v2/repository/models/{model_name}/unload",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
"""What KServe 0.21 (and FastAPI's defaults) register beyond SERVED_ROUTES."""


def registered(served_routes=SERVED_ROUTES):
    registry = ModelRepository()
    server = RESTServer("unused:app", DataPlane(model_registry=registry), ModelRepositoryExtension(registry), 0)
    app = FastAPI(docs_url="/docs", redoc_url="/redoc")
    served = ServedRoutesOnly(app, served_routes)
    register_endpoints(server, served)
    return app, served


def test_kserve_registers_exactly_the_routes_this_list_knows():
    app, served = registered()
    served.finish()
    assert served.kept == SERVED_ROUTES
    assert served.dropped == KSERVE_ROUTES_NOT_SERVED
    assert {getattr(route, "path", None) for route in app.router.routes} <= SERVED_ROUTES | {None}


def test_a_served_route_kserve_no_longer_registers_stops_the_server():
    _, served = registered(SERVED_ROUTES | {"/v2/models/{model_name}/renamed"})
    with pytest.raises(RuntimeError, match="review flywheel_core.served_routes.SERVED_ROUTES"):
        served.finish()
