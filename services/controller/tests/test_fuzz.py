"""The published API document (openapi.yaml) against the real health app: its paths and methods are exactly
the ones the app answers, and schemathesis, generating requests from it (valid and invalid), finds no 5xx,
no answer outside the document (status, content type, body, headers) and no hang (a client timeout fails the
test), ready and not ready. The app runs as `_main` serves it: uvicorn on a loopback socket, lifespan off, no
access log. The health app takes no credentials (cluster-only, like every probe), so there is one run per
generation mode and readiness rather than one per credential.

Bounded for `make test`: a fixed number of examples, derandomized, so CI sends the same requests every time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flywheel_contracts.ports import free_port
from flywheel_controller._health import METHODS, PATHS, HealthApp
from flywheel_controller._metrics import Metrics

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
START_TIMEOUT_S = 30.0
FUZZ = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def document_routes() -> set[tuple[str, str]]:
    return {(op.path, op.method.upper()) for op in (result.ok() for result in SCHEMA.get_all_operations())}


def test_the_document_lists_exactly_the_paths_and_methods_the_app_answers():
    assert document_routes() == {(path, method) for path in PATHS for method in METHODS}


class Served:
    def __init__(self, url: str, session: requests.Session) -> None:
        self.url, self.session, self.ready = url, session, True


@pytest.fixture(scope="module")
def health() -> Iterator[Served]:
    port = free_port()
    metrics = Metrics()
    metrics.verdicts.labels(model="fraud", verdict="Successful").inc()  # a series with labels in the exposition
    served: Served
    app = HealthApp(metrics.registry, lambda: served.ready)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", access_log=False,
                                           log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the health server did not start"
        time.sleep(0.02)
    try:
        with requests.Session() as session:  # one keep-alive connection: an answer must not break the next request
            served = Served(f"http://127.0.0.1:{port}", session)
            yield served
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("ready", [True, False], ids=["ready", "not-ready"])
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(health, ready):
    """Positive generation only: the operations take no parameters or bodies, so there is nothing to make
    invalid (the next test sends other paths and methods). Not ready, the documented 503 of /readyz (and only
    that) is the answer, so the 5xx check gives way to the status check there."""
    health.ready = ready
    strategy = SCHEMA.as_strategy(generation_mode=GenerationMode.POSITIVE)
    checks = CHECKS if ready else [check for check in CHECKS if check is not not_a_server_error]

    @FUZZ
    @given(case=strategy)
    def fuzz(case):
        response = case.call(base_url=health.url, session=health.session, timeout=CLIENT_TIMEOUT_S)
        case.validate_response(response, checks=checks)
        if response.status_code >= 500:
            assert (case.operation.path, response.status_code) == ("/readyz", 503), response.text

    try:
        fuzz()
    finally:
        health.ready = True


PATH_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#%")


@FUZZ
@given(path=st.text(PATH_CHARS, max_size=30), method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
                                                                     "OPTIONS", "TRACE", "PROPFIND"]))
def test_any_other_path_or_method_is_a_json_404_or_405_never_a_5xx(health, path, method):
    answer = health.session.request(method, f"{health.url}/{path}", timeout=CLIENT_TIMEOUT_S)
    if f"/{path}" in PATHS and method in METHODS:
        assert answer.status_code == 200
        return
    assert answer.status_code == (405 if f"/{path}" in PATHS else 404), (method, path, answer.status_code)
    assert answer.headers["content-type"] == "application/json"
    if method != "HEAD":
        assert answer.json()["code"] in ("not_found", "method_not_allowed")
    if answer.status_code == 405:
        assert answer.headers["allow"] == "GET, HEAD"


def test_the_fuzz_catches_an_answer_outside_the_document():
    """The net has no hole at its most basic: a status the document does not list for the operation fails."""
    operation = SCHEMA["/healthz"]["GET"]
    case = operation.Case()
    response = requests.Response()
    response.status_code, response._content = 409, b'{"error": "x", "code": "conflict"}'
    response.headers["content-type"] = "application/json"
    response.request = requests.Request("GET", "http://x/healthz").prepare()
    with pytest.raises(BaseExceptionGroup) as caught:  # schemathesis FailureGroup
        case.validate_response(response, checks=CHECKS)
    assert [failure.title for failure in caught.value.exceptions] == ["Undocumented status code"]
