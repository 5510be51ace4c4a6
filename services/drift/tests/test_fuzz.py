"""The published API document (openapi.yaml) against the real service: its paths and methods are exactly the
routes the app registers, and schemathesis, generating requests from it (valid and invalid, with the right
token, none and a wrong one), finds no 5xx, no answer outside the document (status, content type, body,
headers) and no hang (a client timeout fails the test).

Bounded for `make test`: a fixed number of examples, derandomized, so CI runs the same requests every time."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from flywheel_contracts.auth import TokenFile
from flywheel_drift import DriftService, create_app

from conftest import make_settings, publish_version
from test_process import free_port, start

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
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def document_routes() -> set[tuple[str, str]]:
    return {(op.path, op.method.upper()) for op in (result.ok() for result in SCHEMA.get_all_operations())}


def test_the_document_lists_exactly_the_routes_the_app_registers(tmp_path):
    publish_version(tmp_path / "repo")
    app = create_app(DriftService(make_settings(tmp_path)), start=False)
    registered = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods
        if method != "HEAD"  # Starlette's implicit HEAD for every GET
    }
    assert document_routes() == registered


@pytest.fixture(scope="module")
def drift(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("fuzz")
    publish_version(workdir / "repo")
    process, url, _ = start(workdir, free_port())
    try:
        with requests.Session() as session:
            yield url, session, workdir / "tokens"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def credentials(which: str, path: str, tokens: Path) -> dict[str, str]:
    if which == "none":
        return {}
    if which == "wrong":
        return {"authorization": "Bearer not-the-token"}
    name = {"/v1/labels": "drift-labels", "/v1/skew": "drift-skew", "/v1/skew/sample": "drift-skew"}.get(
        path, "drift-ingest")
    return TokenFile(tokens / name).header()


@pytest.mark.parametrize("which", ["valid", "none", "wrong"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(drift, mode, which):
    url, session, tokens = drift

    @FUZZ
    @given(case=SCHEMA.as_strategy(generation_mode=mode))
    def fuzz(case):
        headers = credentials(which, case.operation.path, tokens)
        response = case.call(base_url=url, session=session, headers=headers, timeout=CLIENT_TIMEOUT_S)
        case.validate_response(response, checks=CHECKS)

    fuzz()
