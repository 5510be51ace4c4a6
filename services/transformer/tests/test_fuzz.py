"""The published API document (openapi.yaml) against the real server: its paths and methods are exactly the
routes the server registers, and schemathesis, generating requests from it (valid and invalid, with the debug
token and without), finds no 5xx, no answer outside the document (status, content type, body, headers) and no
hang (a client timeout fails the test).

Bounded for `make test`: a fixed number of examples, derandomized, so CI runs the same requests every time."""

from __future__ import annotations

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

from flywheel_transformer._kserve_adapter import ServedRoutesRESTServer, served_routes

from conftest import publish_version
from servers import CloudEventSink, FeatureServerStub, PredictorStub, TransformerProcess
from test_policy import DOMAIN

DOCUMENT = Path(__file__).parents[1] / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(DOCUMENT)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
DEBUG_TOKEN = "fuzz-debug-token"
CREDENTIALS = {"valid": {"authorization": f"Bearer {DEBUG_TOKEN}"}, "none": {}, "wrong": {"authorization": "Bearer x"}}
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
    registry = ModelRepository()
    dataplane, extension = DataPlane(model_registry=registry), ModelRepositoryExtension(registry)
    rest = ServedRoutesRESTServer("unused:app", dataplane, extension, 0)
    app = FastAPI()
    rest._register_endpoints(app)  # what the server does: only the served routes stay
    registered = {(route.path, method) for route in served_routes(app) for method in route.methods}
    assert document_routes() == registered


@pytest.fixture(scope="module")
def transformer(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("fuzz")
    publish_version(workdir / "model_repo", training_domain=DOMAIN)
    (workdir / "debug-token").write_text(DEBUG_TOKEN + "\n")
    with FeatureServerStub() as features, PredictorStub() as predictor, CloudEventSink() as sink:
        env = {
            "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(workdir / "model_repo"),
            "FLYWHEEL_TRANSFORMER_FEATURES_URL": features.url,
            "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": predictor.url,
            "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": sink.url + "/",
            "FLYWHEEL_TRANSFORMER_HTTP_HOST": "127.0.0.1",
            "FLYWHEEL_TRANSFORMER_DEBUG_FEATURES": "true",
            "FLYWHEEL_TRANSFORMER_DEBUG_TOKEN_FILE": str(workdir / "debug-token"),
        }
        with TransformerProcess(env, workdir / "transformer.log") as process, requests.Session() as session:
            process.session = session  # one keep-alive connection: an answer must not break the next request
            yield process


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v2/models/fraud/versions/v1"),
        ("GET", "/v2/models/fraud/versions/v1/ready"),
        ("POST", "/v2/models/fraud/versions/v1/infer"),
    ],
)
def test_kserves_versioned_routes_are_a_404_naming_the_header_not_a_501(transformer, method, path):
    """Found by the fuzzer: KServe answers these 501 "Model versioning not supported yet"."""
    answer = transformer.session.request(method, transformer.url + path, json={"inputs": []}, timeout=10)
    assert answer.status_code == 404
    assert answer.json()["type"] == "version_route_not_served"
    assert "x-flywheel-model-version" in answer.json()["error"]


def test_a_body_kserves_v2_model_refuses_is_a_400_naming_the_field_not_fastapis_422(transformer):
    """Found by the fuzzer: FastAPI's own 422 `{"detail": [...]}` broke the error shape and echoed the input."""
    answer = transformer.session.post(
        transformer.url + "/v2/models/fraud/infer", json={"inputs": [], "id": {"secret": "x"}}, timeout=10
    )
    assert answer.status_code == 400
    body = answer.json()
    assert body["type"] == "invalid_request" and body["field"] == "id" and "secret" not in answer.text


@pytest.mark.parametrize("credentials", sorted(CREDENTIALS))
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(transformer, mode, credentials):
    strategy = SCHEMA.as_strategy(generation_mode=mode)

    @FUZZ
    @given(case=strategy)
    def fuzz(case):
        response = case.call(
            base_url=transformer.url,
            session=transformer.session,
            headers=CREDENTIALS[credentials],
            timeout=CLIENT_TIMEOUT_S,
        )
        case.validate_response(response, checks=CHECKS)

    fuzz()


def test_the_fuzz_catches_an_answer_outside_the_document():
    """The net has no hole at its most basic: a status the document does not list for the operation fails."""
    operation = SCHEMA["/v2/models/{model_name}/infer"]["POST"]
    case = operation.Case(path_parameters={"model_name": "fraud"}, body={"inputs": []}, media_type="application/json")
    response = requests.Response()
    response.status_code, response._content = 200, b"{}"
    response.headers["content-type"] = "application/json"
    response.request = requests.Request("POST", "http://x/v2/models/fraud/infer").prepare()
    with pytest.raises(BaseExceptionGroup) as caught:  # schemathesis FailureGroup
        case.validate_response(response, checks=CHECKS)
    assert [failure.title for failure in caught.value.exceptions] == ["Undocumented status code"]
