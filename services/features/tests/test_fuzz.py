"""The published API document (openapi.yaml) against the real server: its paths and methods are exactly the
routes the server answers (the guard's allowlist, with the methods the app registers for each), and
schemathesis, generating requests from it (valid and invalid, with the right token for each route, none and
a wrong one), finds no 5xx, no answer outside the document (status, content type, body, headers) and no
hang (a client timeout fails the test).

The fuzzed process (`python -m flywheel_features serve`, as `make up` runs it) has a data directory of its
own, applied and materialized as the CLI does: the fuzzer's writes (push, materialize, stream) never reach the
store the other tests read. Bounded for `make test`: a fixed number of examples, derandomized, so CI
sends the same requests every time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
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

from flywheel_contracts.auth import TokenFile
from flywheel_core import feature_pipeline
from flywheel_features import create_app
from flywheel_features._guard import ROUTES, Access

from conftest import free_port

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
START_TIMEOUT_S = 60.0
FUZZ = settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def document_routes() -> set[tuple[str, str]]:
    return {(op.path, op.method.upper()) for op in (result.ok() for result in SCHEMA.get_all_operations())}


def test_the_document_lists_exactly_the_routes_the_server_answers(settings, store):
    app = create_app(settings, store)
    methods = {route.path: route.methods - {"HEAD"} for route in app.router.routes if getattr(route, "methods", None)}
    answered = {(path, method) for path in ROUTES for method in methods[path]}
    assert document_routes() == answered


PREPARE = "import flywheel_features as f; s = f.load_settings(); f.apply(s); f.materialize(f.open_store(s))"
"""`apply` then `materialize`, what the CLI runs, in one process (Feast's import alone takes seconds)."""


def _prepare(env: dict[str, str]) -> None:
    run = subprocess.run([sys.executable, "-c", PREPARE], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr


class Served:
    def __init__(self, url: str, headers: dict[Access, dict[str, str]], session: requests.Session) -> None:
        self.url, self.headers, self.session = url, headers, session


@pytest.fixture(scope="module")
def features(data_dir: Path, tokens: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    own = tmp_path_factory.mktemp("fuzz-data")
    for name in (feature_pipeline.CARD_ACTIVITY_FILE, feature_pipeline.MERCHANT_RISK_FILE):
        shutil.copy(data_dir / name, own / name)
    tmp = tmp_path_factory.mktemp("fuzz-tmp")
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PROMETHEUS_", "FLYWHEEL_FEATURES_"))}
    env.update(TMPDIR=str(tmp), FLYWHEEL_DATA_DIR=str(own),
               FLYWHEEL_FEATURES_REPO_PATH=str(Path(__file__).resolve().parents[3] / "feature_repo"),
               FLYWHEEL_FEATURES_HOST="127.0.0.1", FLYWHEEL_FEATURES_PORT=str(port),
               FLYWHEEL_FEATURES_LOG_LEVEL="warning",
               FLYWHEEL_FEATURES_READ_TOKEN_FILE=str(tokens / "features-read"),
               FLYWHEEL_FEATURES_WRITE_TOKEN_FILE=str(tokens / "features-write"))
    _prepare(env)
    log = tmp_path_factory.mktemp("fuzz-log") / "features.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen([sys.executable, "-m", "flywheel_features", "serve"], env=env, stdout=sink,
                                  stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        headers = {Access.OPEN: {}, Access.READ: TokenFile(tokens / "features-read").header(),
                   Access.WRITE: TokenFile(tokens / "features-write").header()}
        with requests.Session() as session:  # one keep-alive connection: an answer must not break the next request
            yield Served(url, headers, session)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


def _credentials(features: Served, which: str, path: str) -> dict[str, str]:
    if which == "valid":
        return features.headers[ROUTES[path]]
    return {} if which == "none" else {"authorization": "Bearer wrong-token"}


@pytest.mark.parametrize(
    ("path", "body", "names"),
    [("/materialize", {}, "start_ts"), ("/materialize", {"start_ts": "2026-01-02", "end_ts": "2026-01-01"}, "before"),
     ("/materialize", {"start_ts": "yesterday-ish", "end_ts": "2026-01-01"}, "yesterday-ish"),
     ("/materialize-incremental", {"end_ts": "not a time"}, "not a time"),
     ("/materialize-incremental", {"end_ts": "2026-01-01", "version": "v2"}, "exactly one feature view")],
)
def test_a_materialization_request_feast_cannot_read_is_a_400_naming_the_problem_not_a_500(features, path, body, names):
    """Found by the fuzzer: Feast's ValueErrors for the interval and the version were 500s with a traceback logged."""
    answer = features.session.post(features.url + path, json=body, headers=features.headers[Access.WRITE],
                                   timeout=CLIENT_TIMEOUT_S)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "bad_request" and names in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"{not json", "body"), (b'{"features": "card_activity:txn_count_24h", "entities": {"card_id": ["c1"]}}', "features"),
     (b'{"entities": {"card_id": "secret-value"}}', "entities.card_id")],
)
def test_a_body_fastapi_refuses_is_a_422_in_the_error_family_naming_the_field(features, body, field):
    """Found by the fuzzer: FastAPI's own 422 `{"detail": [...]}` broke the error shape and echoed the input."""
    answer = features.session.post(features.url + "/get-online-features", data=body, timeout=CLIENT_TIMEOUT_S,
                                   headers={**features.headers[Access.READ], "content-type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["code"] == "unprocessable" and answer.json()["field"] == field
    assert "detail" not in answer.json() and "secret-value" not in answer.text


@pytest.mark.parametrize("credentials", ["valid", "none", "wrong"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(features, mode, credentials):
    strategy = SCHEMA.as_strategy(generation_mode=mode)

    @FUZZ
    @given(case=strategy)
    def fuzz(case):
        headers = _credentials(features, credentials, case.operation.path)
        response = case.call(base_url=features.url, session=features.session, headers=headers,
                             timeout=CLIENT_TIMEOUT_S)
        case.validate_response(response, checks=CHECKS)

    fuzz()


def test_the_fuzz_catches_an_answer_outside_the_document():
    """The net has no hole at its most basic: a status the document does not list for the operation fails."""
    operation = SCHEMA["/get-online-features"]["POST"]
    case = operation.Case(body={"entities": {}}, media_type="application/json")
    response = requests.Response()
    response.status_code, response._content = 409, b"{}"
    response.headers["content-type"] = "application/json"
    response.request = requests.Request("POST", "http://x/get-online-features").prepare()
    with pytest.raises(BaseExceptionGroup) as caught:  # schemathesis FailureGroup
        case.validate_response(response, checks=CHECKS)
    assert [failure.title for failure in caught.value.exceptions] == ["Undocumented status code"]
