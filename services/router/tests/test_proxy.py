"""The inference port through ASGI: pass-through, version headers, faults, statistics, shadow."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from conftest import TRANSACTION, FakeUpstream, Transport, client, eventually, hang, refuse, route

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_v1_passes_through_to_the_stable_and_says_which_version_answered(make_app, upstream) -> None:
    app = make_app(route())
    async with client(app) as c:
        r = await c.post("/v1/models/fraud:predict", content=orjson.dumps(TRANSACTION), headers={"x-custom": "kept"})
    assert r.status_code == 200
    assert r.headers["x-flywheel-model-version"] == "v1" and r.headers["x-flywheel-route"] == "stable"
    sent = upstream.calls[0]
    assert str(sent.url) == "http://transformer.test/v1/models/fraud:predict"
    assert sent.content == orjson.dumps(TRANSACTION)  # the bytes, unchanged
    assert sent.headers["x-custom"] == "kept" and sent.headers["x-flywheel-model-version"] == "v1"
    assert r.json()["predictions"][0]["score"] == 0.1


async def test_v2_infer_and_the_versioned_path_pin_the_version(make_app, upstream) -> None:
    app = make_app(route(candidate={"version": "v2"}, candidateWeight=0))
    async with client(app) as c:
        plain = await c.post("/v2/models/fraud/infer", content=b"{}")
        pinned = await c.post("/v2/models/fraud/versions/v2/infer", content=b"{}")
    assert plain.headers["x-flywheel-route"] == "stable"
    assert pinned.headers["x-flywheel-route"] == "pinned" and pinned.headers["x-flywheel-model-version"] == "v2"
    assert upstream.calls[1].url.path == "/v2/models/fraud/versions/v2/infer"


async def test_a_candidate_endpoint_gets_its_own_upstream(make_app, upstream) -> None:
    app = make_app(route(candidate={"version": "v2", "endpoint": "http://fraud-v2.test:8090"}, candidateWeight=100))
    async with client(app) as c:
        await c.post("/v1/models/fraud:predict?x=1", content=b"{}")
    assert str(upstream.calls[0].url) == "http://fraud-v2.test:8090/v1/models/fraud:predict?x=1"


async def test_the_preview_header_reaches_the_candidate(make_app) -> None:
    app = make_app(route(candidate={"version": "v2"}, previewHeader="x-flywheel-preview"))
    async with client(app) as c:
        preview = await c.post("/v1/models/fraud:predict", content=b"{}", headers={"x-flywheel-preview": "1"})
        normal = await c.post("/v1/models/fraud:predict", content=b"{}")
    assert preview.headers["x-flywheel-model-version"] == "v2"
    assert normal.headers["x-flywheel-model-version"] == "v1"


async def test_a_sticky_cookie_keeps_a_caller_on_one_version(make_app) -> None:
    app = make_app(route(candidate={"version": "v2"}, candidateWeight=50, stickiness={"cookie": "sid"}))
    async with client(app) as c:
        for sid in ("a", "b", "c", "d"):
            versions = set()
            for _ in range(10):
                r = await c.post("/v1/models/fraud:predict", content=b"{}", headers={"cookie": f"x=1; sid={sid}"})
                versions.add(r.headers["x-flywheel-model-version"])
            assert len(versions) == 1


async def test_a_model_without_a_route_goes_to_the_default_upstream_unversioned(make_app, upstream) -> None:
    app = make_app()
    async with client(app) as c:
        r = await c.post("/v1/models/other:predict", content=b"{}")
    assert r.status_code == 200 and r.headers["x-flywheel-route"] == "unrouted"
    assert "x-flywheel-model-version" not in upstream.calls[0].headers


async def test_hop_by_hop_headers_are_not_forwarded_and_request_ids_are_kept_or_made(make_app, upstream) -> None:
    app = make_app(route())
    async with client(app) as c:
        given = await c.post(
            "/v1/models/fraud:predict",
            content=b"{}",
            headers={
                "x-request-id": "abc",
                "connection": "keep-alive, x-secret",
                "x-secret": "s",
                "te": "trailers",
                "proxy-authorization": "Basic x",
            },
        )
        made = await c.post("/v1/models/fraud:predict", content=b"{}")
    sent = upstream.calls[0].headers
    assert sent["x-request-id"] == "abc" and given.headers["x-request-id"] == "abc"
    for name in ("x-secret", "te", "proxy-authorization"):
        assert name not in sent
    assert (
        len(made.headers["x-request-id"]) == 32
        and upstream.calls[1].headers["x-request-id"] == made.headers["x-request-id"]
    )


async def test_a_refusing_candidate_costs_the_caller_nothing(make_app, upstream) -> None:
    upstream.behaviour["v2"] = refuse
    app = make_app(route(candidate={"version": "v2"}, candidateWeight=100))
    async with client(app) as c:
        answers = [await c.post("/v1/models/fraud:predict", content=b"{}") for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert {a.headers["x-flywheel-model-version"] for a in answers} == {"v1"}
    versions = app.stats["fraud"].snapshot("r", _now()).versions
    assert versions["v2"].connect_errors == 5 and versions["v2"].errors == 5
    assert versions["v1"].requests == 5 and versions["v1"].errors == 0


@pytest.mark.parametrize("failure", [hang, lambda r: httpx.Response(503, content=b'{"error":"not ready"}')])
async def test_a_timing_out_or_unready_candidate_is_retried_on_the_stable(make_app, upstream, failure) -> None:
    upstream.behaviour["v2"] = failure
    app = make_app(route(candidate={"version": "v2"}, candidateWeight=100))
    async with client(app) as c:
        r = await c.post("/v1/models/fraud:predict", content=b"{}")
    assert r.status_code == 200 and r.headers["x-flywheel-model-version"] == "v1"
    assert app.stats["fraud"].snapshot("r", _now()).versions["v2"].errors == 1


async def test_a_stable_that_is_down_gives_a_clear_503(make_app, upstream) -> None:
    upstream.behaviour["v1"] = refuse
    app = make_app(route())
    async with client(app) as c:
        r = await c.post("/v1/models/fraud:predict", content=b"{}")
    assert r.status_code == 503
    assert "model 'fraud' version 'v1' cannot answer" in r.json()["error"]


async def test_upstream_errors_pass_through_unchanged(make_app, upstream) -> None:
    upstream.behaviour["v1"] = lambda r: httpx.Response(400, json={"error": "'amount' is negative"})
    app = make_app(route())
    async with client(app) as c:
        r = await c.post("/v1/models/fraud:predict", content=b"{}")
    assert r.status_code == 400 and r.json() == {"error": "'amount' is negative"}
    assert app.stats["fraud"].snapshot("r", _now()).versions["v1"].status_4xx == 1


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/v1/models/fraud:predict", 405, "POST"),
        ("GET", "/v2/models/fraud/infer", 405, "POST"),
        ("POST", "/v2/health/ready", 405, "GET"),
        ("GET", "/nope", 404, None),
        ("GET", "/v2/models/fraud/versions/v2/infer", 405, "POST"),
        ("PUT", "/v2/models/fraud", 405, "GET"),
    ],
)
async def test_wrong_paths_and_methods_get_json_errors(make_app, method, path, status, allow) -> None:
    async with client(make_app(route())) as c:
        r = await c.request(method, path)
    assert r.status_code == status and "error" in r.json()
    assert r.headers.get("allow") == allow


async def test_a_malformed_version_is_a_400_naming_where_it_came_from(make_app) -> None:
    async with client(make_app(route())) as c:
        path = await c.post("/v2/models/fraud/versions/v%201/infer", content=b"{}")
        header = await c.post("/v1/models/fraud:predict", content=b"{}", headers={"x-flywheel-model-version": "v 1"})
    assert path.status_code == 400 and "versioned path" in path.json()["error"]
    assert header.status_code == 400 and "x-flywheel-model-version" in header.json()["error"]


async def test_a_body_over_the_limit_is_a_413(make_app) -> None:
    async with client(make_app(route(), max_body_bytes=1024)) as c:
        r = await c.post("/v1/models/fraud:predict", content=b"x" * 2048)
    assert r.status_code == 413 and "FLYWHEEL_ROUTER_MAX_BODY_BYTES" in r.json()["error"]


async def test_health_readiness_and_metrics(make_app) -> None:
    app = make_app(route())
    async with client(app) as c:
        await c.post("/v1/models/fraud:predict", content=b"{}")
        live, ready, metrics = await c.get("/v2/health/live"), await c.get("/v2/health/ready"), await c.get("/metrics")
    assert live.status_code == 200 and ready.json() == {"ready": True}
    assert 'flywheel_router_requests_total{code="2xx",model="fraud",role="stable",version="v1"} 1.0' in metrics.text
    assert 'flywheel_router_predictions_total{model="fraud",version="v1"} 1.0' in metrics.text


async def test_not_ready_until_the_routes_are_loaded(upstream) -> None:
    from flywheel_router import InferenceApp, RouteTable, Settings
    from flywheel_router._metrics import Metrics
    from flywheel_router._upstream import Upstreams

    app = InferenceApp(Settings(), RouteTable(), Upstreams(1, 1, 1, transport=Transport(upstream)), Metrics())
    async with client(app) as c:
        assert (await c.get("/v2/health/ready")).status_code == 503


async def test_metadata_goes_to_the_stable_or_the_named_version(make_app, upstream) -> None:
    app = make_app(route(candidate={"version": "v2"}))
    async with client(app) as c:
        await c.get("/v2/models/fraud")
        await c.get("/v2/models/fraud/versions/v2/ready")
    assert upstream.calls[0].headers["x-flywheel-model-version"] == "v1"
    assert upstream.calls[1].url.path == "/v2/models/fraud/versions/v2/ready"
    assert upstream.calls[1].headers["x-flywheel-model-version"] == "v2"


async def test_stats_count_requests_predictions_declines_and_latency_per_version(make_app, upstream) -> None:
    upstream.scores["v2"] = 0.9
    app = make_app(route(candidate={"version": "v2"}, candidateWeight=50))
    async with client(app) as c:
        for _ in range(200):
            await c.post("/v1/models/fraud:predict", content=b"{}")
    versions = app.stats["fraud"].snapshot("r", _now()).versions
    v1, v2 = versions["v1"], versions["v2"]
    assert v1.requests + v2.requests == 200 and 60 < v2.requests < 140
    assert v2.declines == v2.predictions == v2.requests and v1.declines == 0
    assert v1.latency_seconds.count == v1.requests and v2.scores.counts[v2.scores.le.index(0.9)] == v2.requests


async def test_shadow_compares_answers_and_the_caller_sees_only_the_stable(make_app, upstream) -> None:
    upstream.scores.update(v1=0.3, v2=0.7)  # every decision differs, each score by 0.4
    app = make_app(route(candidate={"version": "v2"}, shadowPercent=100))
    app.shadow.start()
    async with client(app) as c:
        answers = [await c.post("/v1/models/fraud:predict", content=b"{}") for _ in range(20)]
    await _drain(app)
    assert {a.headers["x-flywheel-model-version"] for a in answers} == {"v1"}
    shadow = app.stats["fraud"].snapshot("r", _now()).shadow
    assert shadow.mirrored == 20 and shadow.compared == 20 and shadow.decision_mismatches == 20
    assert shadow.score_diff.quantile(0.5) == 0.5  # 0.4 falls in (0.2, 0.5]
    mirrored = [c for c in upstream.calls if c.headers.get("x-flywheel-shadow") == "1"]
    assert len(mirrored) == 20 and {c.headers["x-flywheel-model-version"] for c in mirrored} == {"v2"}
    await app.shadow.aclose()


async def test_a_full_shadow_queue_drops_copies_instead_of_delaying_callers(make_app, upstream) -> None:
    release, taken = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        taken.set()
        await release.wait()
        return httpx.Response(200, json={"predictions": [{"score": 0.1, "decision": "approve"}]})

    app = make_app(route(candidate={"version": "v2"}, shadowPercent=100), shadow_queue_size=2)
    app.upstreams._client._transport = _Split(upstream, slow)
    app.shadow._workers_n = 1
    app.shadow.start()
    async with client(app) as c:
        answers = [await asyncio.wait_for(c.post("/v1/models/fraud:predict", content=b"{}"), 2)]
        # The one worker holds the first copy (stuck on the candidate) before the rest arrive: the queue then
        # takes two more and drops the other seven.
        await eventually(taken.is_set, "the shadow worker never took the first copy")
        answers += [await asyncio.wait_for(c.post("/v1/models/fraud:predict", content=b"{}"), 2) for _ in range(9)]
    assert all(a.status_code == 200 for a in answers)
    shadow = app.stats["fraud"].shadow
    assert shadow.mirrored == 3 and shadow.dropped == 7
    release.set()
    await _drain(app)
    await app.shadow.aclose()


async def test_a_dead_shadow_candidate_is_paused_with_back_off_and_never_fails_callers(make_app, upstream) -> None:
    upstream.behaviour["v2"] = refuse
    app = make_app(route(candidate={"version": "v2"}, shadowPercent=100))
    app.shadow.start()
    async with client(app) as c:
        answers = []
        for _ in range(10):
            answers.append(await c.post("/v1/models/fraud:predict", content=b"{}"))
            await _drain(app)
        shadow = app.stats["fraud"].shadow
        assert all(a.status_code == 200 for a in answers)
        assert shadow.candidate_errors == 1 and shadow.mirrored == 1 and shadow.skipped == 9  # paused after one
        del upstream.behaviour["v2"]  # the candidate comes back
        await eventually(lambda: app.shadow.accepting("fraud", "v2"), "the first back-off (0.25 s) never ended")
        for _ in range(3):
            await c.post("/v1/models/fraud:predict", content=b"{}")
            await _drain(app)
    assert shadow.mirrored == 4 and shadow.compared == 4 and shadow.candidate_errors == 1
    await app.shadow.aclose()


class _Split(httpx.AsyncBaseTransport):
    """Shadow copies to `shadow`, everything else to the fake upstream."""

    def __init__(self, upstream: FakeUpstream, shadow) -> None:
        self.main = Transport(upstream)
        self.shadow = Transport(shadow)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("x-flywheel-shadow") == "1":
            return await self.shadow.handle_async_request(request)
        return await self.main.handle_async_request(request)


async def _drain(app) -> None:
    await asyncio.wait_for(app.shadow._queue.join(), 5)


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


async def test_a_503_names_the_model_and_version_but_no_internal_address(make_app, upstream, caplog) -> None:
    upstream.behaviour["v1"] = refuse
    app = make_app(route())
    async with client(app) as c:
        answers = [await c.post("/v1/models/fraud:predict", content=b"{}") for _ in range(5)]
    for r in answers:
        assert r.status_code == 503 and "cannot be reached" in r.json()["error"]
        assert "http" not in r.text and "127.0.0.1" not in r.text and ":80" not in r.text, r.text
    # The detail goes to the log, once for the burst (the metrics count every failure).
    lines = [
        rec.getMessage() for rec in caplog.records if rec.name == "flywheel_router" and "upstream" in rec.getMessage()
    ]
    assert len(lines) == 1 and "http" in lines[0], lines


def test_the_failure_log_says_how_many_it_left_out() -> None:
    import logging

    from flywheel_router._proxy import FailureLog
    from flywheel_router._upstream import UpstreamFailure

    now = [0.0]
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    logging.getLogger("flywheel_router").addHandler(handler)
    try:
        failures = FailureLog(every_s=60, clock=lambda: now[0])
        for t in (0, 1, 2, 30, 61):
            now[0] = t
            failures.note("fraud v1", UpstreamFailure("connect", "cannot reach http://10.0.0.7:8090 (ConnectError)"))
    finally:
        logging.getLogger("flywheel_router").removeHandler(handler)
    assert len(records) == 2 and "and 3 more" in records[1], records


async def test_a_bug_inside_a_handler_is_a_500_with_a_generic_body_and_one_logged_traceback(
    make_app, upstream, caplog
) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("secret detail from a bug")

    upstream.behaviour["v1"] = broken
    async with client(make_app(route())) as c:
        r = await c.post("/v1/models/fraud:predict", content=b"{}")
    assert r.status_code == 500
    assert r.json() == {"error": "internal error: the service logged the details", "code": "internal"}
    logged = [rec for rec in caplog.records if rec.exc_info and rec.exc_info[0] is RuntimeError]
    assert len(logged) == 1 and "/v1/models/fraud:predict" in logged[0].getMessage()


async def test_error_bodies_carry_the_shared_code(make_app) -> None:
    async with client(make_app(route())) as c:
        missing, wrong = await c.get("/nope"), await c.get("/v2/models/fraud/infer")
    assert missing.json() == {"error": missing.json()["error"], "code": "not_found"}
    assert wrong.json()["code"] == "method_not_allowed" and wrong.headers["allow"] == "POST"
