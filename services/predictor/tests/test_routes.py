"""Only inference, health, metadata and metrics are served: KServe's model repository extension is not.

Stock KServe 0.21 answers `POST /v2/repository/models/fraud/unload` with 200 to anyone who reaches the
port; readiness is then 503 and every prediction 404 while liveness stays 200.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer

from flywheel_predictor._kserve_adapter import register_endpoints
from flywheel_predictor._routes import SERVED_ROUTES, ServedRoutesOnly

from tiny_model import DIM

ROW = {"instances": [[0.5] * DIM]}

NOT_SERVED = [
    ("POST", "/v2/repository/models/fraud/unload", 404),
    ("POST", "/v2/repository/models/fraud/load", 404),
    ("POST", "/v2/repository/index", 404),
    ("POST", "/v1/models/fraud:explain", 405),  # matches GET /v1/models/{model_name}, with the name "fraud:explain"
    ("GET", "/openapi.json", 404),
    ("GET", "/docs", 404),
    ("POST", "/openai/v1/completions", 404),
]

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


@pytest.mark.parametrize(("method", "path", "status"), NOT_SERVED)
def test_a_route_that_is_not_served_is_a_json_404(client: httpx.Client, method: str, path: str, status: int) -> None:
    response = client.request(method, path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert path in response.json()["error"]


def test_unload_changes_nothing_the_model_stays_ready_and_predicts(client: httpx.Client) -> None:
    assert client.post("/v2/repository/models/fraud/unload").status_code == 404
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/fraud/ready").json()["ready"] is True
    assert client.get("/v1/models/fraud").status_code == 200
    response = client.post("/v1/models/fraud:predict", json=ROW)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/", "/v2/health/live", "/v2/health/ready", "/v1/models", "/v2", "/v2/models", "/v2/models/fraud", "/metrics"])
def test_health_metadata_and_metrics_stay_open(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200


def test_server_metadata_lists_no_extension(client: httpx.Client) -> None:
    assert client.get("/v2").json()["extensions"] == []


def test_kserve_registers_exactly_the_routes_this_list_knows() -> None:
    # Fails when a KServe upgrade adds, renames or drops a route: review SERVED_ROUTES before upgrading.
    registry = ModelRepository()
    server = RESTServer("unused:app", DataPlane(model_registry=registry), ModelRepositoryExtension(registry), 0)
    app = FastAPI(docs_url="/docs", redoc_url="/redoc")
    served = ServedRoutesOnly(app)
    register_endpoints(server, served)
    served.finish()
    assert served.kept == SERVED_ROUTES
    assert served.dropped == KSERVE_ROUTES_NOT_SERVED
    assert {getattr(route, "path", None) for route in app.router.routes} <= SERVED_ROUTES | {None}
