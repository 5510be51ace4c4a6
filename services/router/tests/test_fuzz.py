"""Inputs nobody planned for: whatever the path, method, headers or body, the router answers with a
defined status and, for its own errors, a JSON body; never a 500 or a hang. The admin API likewise for
any JSON a writer might send. Then the published document (openapi.yaml) against the real process: its
paths and methods are exactly what the router answers, and schemathesis, generating requests from it (with
the admin token, without, and with a wrong one), finds no 5xx, no answer outside the document and no hang."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
import yaml
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

from flywheel_contracts import Route
from flywheel_contracts.router_stats import RouterStats
from flywheel_router import AdminApp, InferenceApp, RouteTable, Settings, TokenFile
from flywheel_router._metrics import Metrics
from flywheel_router._store_file import FileRouteSource
from flywheel_router._upstream import Upstreams

from conftest import FakeUpstream, Transport, route
from test_process import free_port, wait

SEGMENTS = st.sampled_from(
    [
        "v1",
        "v2",
        "models",
        "fraud",
        "infer",
        "versions",
        "ready",
        "health",
        "live",
        "",
        "x",
        "fraud:predict",
        "v9",
        "..",
        "%2F",
        "v1 ",
        "metrics",
    ]
)
# "//x" would be a scheme-relative URL to the test client, not a path: it never reaches a server as one.
PATHS = st.lists(SEGMENTS, min_size=0, max_size=6).map(lambda parts: "/" + "/".join(parts)).filter(
    lambda path: not path.startswith("//")
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
HEADER_NAMES = st.sampled_from(
    [
        "x-flywheel-model-version",
        "x-flywheel-preview",
        "cookie",
        "x-card",
        "connection",
        "content-type",
        "x-request-id",
        "te",
        "authorization",
    ]
)
HEADER_VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


def build() -> InferenceApp:
    upstreams = Upstreams(1.0, 2.0, 8, transport=Transport(FakeUpstream()))
    app = InferenceApp(
        Settings(default_upstream="http://t.test", max_body_bytes=4096), RouteTable(), upstreams, Metrics()
    )
    app.apply(
        {
            "fraud": route(
                candidate={"version": "v2"},
                candidateWeight=50,
                previewHeader="x-flywheel-preview",
                stickiness={"header": "x-card"},
            )
        }
    )
    return app


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=METHODS,
    path=PATHS,
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4),
    body=st.binary(max_size=6000),
)
def test_the_inference_port_never_fails_on_odd_requests(method, path, headers, body) -> None:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build()), base_url="http://r.test") as c:
            return await asyncio.wait_for(c.request(method, path, headers=headers, content=body), 5)

    answer = asyncio.run(go())
    assert answer.status_code in {200, 400, 404, 405, 413}, (method, path, answer.text)
    if answer.status_code != 200 and method != "HEAD":  # a HEAD answer has no body by definition
        assert "error" in answer.json()


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
ROUTE_KEYS = st.sampled_from(
    [
        "stable",
        "candidate",
        "candidateWeight",
        "shadowPercent",
        "previewHeader",
        "stickiness",
        "generation",
        "model",
        "schemaVersion",
        "version",
        "endpoint",
    ]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(document=st.dictionaries(ROUTE_KEYS, JSON | st.dictionaries(ROUTE_KEYS, JSON, max_size=3), max_size=6) | JSON)
def test_the_admin_api_answers_any_json_with_a_defined_status(tmp_path: Path, document) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    admin = AdminApp(TokenFile(token), FileRouteSource(tmp_path / "fuzz-routes.json", 0.05), build())

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=admin), base_url="http://a.test") as c:
            return await c.put("/v1/routes/fraud", json=document, headers={"authorization": "Bearer t"})

    answer = asyncio.run(go())
    assert answer.status_code in {200, 201, 400, 409}, answer.text
    assert isinstance(answer.json(), dict)


# -- the published document against `python -m flywheel_router` ----------------------------------------------

DOCUMENT = Path(__file__).parents[1] / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(DOCUMENT)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
ADMIN_TOKEN = "fuzz-admin-token"
CREDENTIALS = {"valid": {"authorization": f"Bearer {ADMIN_TOKEN}"}, "none": {}, "wrong": {"authorization": "Bearer x"}}
CLIENT_TIMEOUT_S = 15.0
"""A request unanswered this long is a hang (the router's own upstream timeout is 10 s)."""
FUZZ = settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
METHODS_TRIED = ("GET", "POST", "PUT", "DELETE", "PATCH")


class _Upstream(BaseHTTPRequestHandler):
    """The transformer, as far as the router can tell: JSON for `fraud`, a JSON 404 for other models."""

    paths: list[str] = []

    def _answer(self) -> None:
        self.paths.append(self.path)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        known = "/models/fraud" in self.path
        body = json.dumps({"predictions": [{"score": 0.1}]} if known else {"error": "no such model"}).encode()
        self.send_response(200 if known else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def router_process(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("fuzz")
    (workdir / "token").write_text(ADMIN_TOKEN)
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    ports = {"http": free_port(), "admin": free_port()}
    env = {
        **os.environ,
        "FLYWHEEL_ROUTER_HTTP_HOST": "127.0.0.1",
        "FLYWHEEL_ROUTER_ADMIN_HOST": "127.0.0.1",
        "FLYWHEEL_ROUTER_HTTP_PORT": str(ports["http"]),
        "FLYWHEEL_ROUTER_ADMIN_PORT": str(ports["admin"]),
        "FLYWHEEL_ROUTER_TOKEN_FILE": str(workdir / "token"),
        "FLYWHEEL_ROUTER_ROUTES_FILE": str(workdir / "routes.json"),
        "FLYWHEEL_ROUTER_DEFAULT_UPSTREAM": f"http://127.0.0.1:{upstream.server_address[1]}",
    }
    with open(workdir / "router.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flywheel_router"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            base = {port: f"http://127.0.0.1:{number}" for port, number in ports.items()}
            wait(base["http"] + "/v2/health/ready")
            with requests.Session() as session:
                yield base, session
        finally:
            process.kill()
            process.wait()
            upstream.shutdown()
            upstream.server_close()


def _port(operation) -> str:
    return "admin" if "admin" in (operation.definition.raw.get("tags") or []) else "http"


def test_the_route_and_stats_schemas_are_the_contracts_own():
    ref = "#/components/schemas/{model}"
    route = Route.model_json_schema(by_alias=True, ref_template=ref)
    stats = RouterStats.model_json_schema(by_alias=True, ref_template=ref, mode="serialization")
    expected = {"Route": route, "RouterStats": stats, **route.pop("$defs"), **stats.pop("$defs")}
    published = yaml.safe_load(DOCUMENT.read_text())["components"]["schemas"]
    assert {name: published.get(name) for name in expected} == expected, (
        "openapi.yaml's contract schemas are stale: paste Model.model_json_schema(by_alias=True) again"
    )


def test_the_router_answers_exactly_the_paths_and_methods_of_the_document(router_process):
    base, _ = router_process
    documented: dict[tuple[str, str], set[str]] = {}
    for result in SCHEMA.get_all_operations():
        operation = result.ok()
        key = (_port(operation), operation.path)
        documented.setdefault(key, set()).add(operation.method.upper())
    admin = CREDENTIALS["valid"]
    for (port, template), methods in documented.items():
        path = template.format(model_name="fraud", model_version="v1", model="fraud")
        for method in METHODS_TRIED:
            answer = httpx.request(method, base[port] + path, headers=admin, json={}, timeout=CLIENT_TIMEOUT_S)
            if method in methods:
                assert answer.status_code != 405, (method, path, answer.text)
            else:
                assert answer.status_code == 405, (method, path, answer.status_code, answer.text)
                assert set(answer.headers["allow"].split(", ")) == methods, (method, path)
    for port in base:  # and nothing else is served
        assert httpx.get(base[port] + "/openapi.json", headers=admin).status_code == 404


def test_a_model_name_outside_latin1_reaches_the_upstream_percent_encoded(router_process):
    """Found by the fuzzer: the path was forwarded decoded, and the HTTP/1.1 client could not write it (a 500)."""
    base, _ = router_process
    for path in ("/v2/models/%F0%9F%98%80/infer", "/v1/models/caf%C3%A9:predict", "/v2/models/%E2%82%AC/ready"):
        method = "GET" if path.endswith("ready") else "POST"
        answer = httpx.request(method, base["http"] + path, json={}, timeout=CLIENT_TIMEOUT_S)
        assert answer.status_code == 404 and answer.json() == {"error": "no such model"}, answer.text
        assert _Upstream.paths[-1] == path


@pytest.mark.parametrize("credentials", sorted(CREDENTIALS))
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(router_process, mode, credentials):
    base, session = router_process

    @FUZZ
    @given(case=SCHEMA.as_strategy(generation_mode=mode))
    def fuzz(case):
        response = case.call(
            base_url=base[_port(case.operation)],
            session=session,
            headers=CREDENTIALS[credentials],
            timeout=CLIENT_TIMEOUT_S,
        )
        case.validate_response(response, checks=CHECKS)

    fuzz()
