"""Inputs nobody planned for: whatever the path, method, headers or body, the router answers with a
defined status and, for its own errors, a JSON body; never a 500 or a hang. The admin API likewise for
any JSON a writer might send."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from conftest import FakeUpstream, Transport, route
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_router import AdminApp, InferenceApp, RouteTable, Settings, TokenFile
from flywheel_router._metrics import Metrics
from flywheel_router._store_file import FileRouteSource
from flywheel_router._upstream import Upstreams

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
