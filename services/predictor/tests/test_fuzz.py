"""The published API document (openapi.yaml) against the real server: its paths and methods are exactly the
routes the server registers, and schemathesis, generating requests from it (valid and invalid), finds no 5xx,
no answer outside the document (status, content type, body, headers) and no hang (a client timeout fails
the test). The predictor takes no credentials (it sits behind the transformer and the router, NetworkPolicy
in the chart), so there is one run per generation mode rather than one per credential.

Bounded for `make test`: a fixed number of examples, derandomized, so CI runs the same requests every time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import Server, running_server

DOCUMENT = Path(__file__).parents[1] / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(DOCUMENT)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
CLIENT_TIMEOUT_S = 10.0
"""A request unanswered this long is a hang."""
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def document_routes() -> set[tuple[str, str]]:
    return {(op.path, op.method.upper()) for op in (result.ok() for result in SCHEMA.get_all_operations())}


def test_the_document_lists_exactly_the_routes_the_server_registers():
    from flywheel_predictor._kserve_adapter import ServedRoutesRESTServer

    registry = ModelRepository()
    rest = ServedRoutesRESTServer("unused:app", DataPlane(model_registry=registry), ModelRepositoryExtension(registry), 0)
    app = FastAPI()
    rest._register_endpoints(app)  # what the server does: only the served routes stay
    assert document_routes() == {(route.path, method) for route in _flattened(app.router.routes) for method in route.methods}


def _flattened(routes: list) -> list:
    """The app's routes with included routers opened (FastAPI keeps an included router as one entry)."""
    found = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            found += _flattened(included.routes)
        elif getattr(route, "methods", None):
            found.append(route)
    return found


@pytest.fixture(scope="module")
def predictor(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(repo, tmp_path_factory.mktemp("fuzz")) as server, requests.Session() as session:
        server.session = session  # one keep-alive connection: an answer must not break the next request
        yield server


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2/models/nope/versions/v1"), ("GET", "/v2/models/nope/versions/v1/ready"), ("POST", "/v2/models/nope/versions/v1/infer")],
)
def test_another_models_versioned_route_is_a_404_naming_the_model_not_a_501(predictor, method, path):
    """Found by the fuzzer: KServe answers these 501 "Model versioning not supported yet"."""
    answer = predictor.session.request(method, predictor.url + path, json={"inputs": []}, timeout=10)
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"
    assert "'nope'" in answer.json()["error"] and "'fraud'" in answer.json()["error"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(predictor, mode):
    strategy = SCHEMA.as_strategy(generation_mode=mode)

    @FUZZ
    @given(case=strategy)
    def fuzz(case):
        response = case.call(base_url=predictor.url, session=predictor.session, timeout=CLIENT_TIMEOUT_S)
        case.validate_response(response, checks=CHECKS)

    fuzz()


def test_the_fuzz_catches_an_answer_outside_the_document():
    """The net has no hole at its most basic: a status the document does not list for the operation fails."""
    operation = SCHEMA["/v2/models/{model_name}/infer"]["POST"]
    case = operation.Case(path_parameters={"model_name": "fraud"}, body={"inputs": []}, media_type="application/json")
    response = requests.Response()
    response.status_code, response._content = 409, b"{}"
    response.headers["content-type"] = "application/json"
    response.request = requests.Request("POST", "http://x/v2/models/fraud/infer").prepare()
    with pytest.raises(BaseExceptionGroup) as caught:  # schemathesis FailureGroup
        case.validate_response(response, checks=CHECKS)
    assert [failure.title for failure in caught.value.exceptions] == ["Undocumented status code"]
