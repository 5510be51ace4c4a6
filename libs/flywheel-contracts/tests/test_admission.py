"""flywheel_contracts.admission in a real uvicorn server, over real HTTP.

The app behind the middleware is a gate: a request to /work enters, records its body, and waits until the
test lets one request out (`gate.release()`), so which requests are in flight, waiting or shed is decided
by the test, never by timing. Polls (`eventually`) only wait for the server to reach a state; nothing here
asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from flywheel_contracts import admission as module
from flywheel_contracts.admission import DEFAULT_EXEMPT_PATHS, Admission, AdmissionSettings, admission
from flywheel_contracts.ports import free_port

PATIENCE_S = 20  # a bound on waiting for the server to reach a state, never an assertion on speed


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.005)


class Gate:
    """An ASGI app: /work waits for `release()`; any other path answers 200 at once."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._open: asyncio.Semaphore | None = None
        self.entered: list[bytes] = []  # the body of each request that reached the app, in order

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if self._open is None:
            self.loop, self._open = asyncio.get_running_loop(), asyncio.Semaphore(0)
        body = b""
        if scope["path"] == "/work":
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            self.entered.append(body)
            await self._open.acquire()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"served:" + body})

    def release(self, n: int = 1) -> None:
        assert self.loop is not None and self._open is not None
        for _ in range(n):
            self.loop.call_soon_threadsafe(self._open.release)


class Running:
    def __init__(self, url: str, gate: Gate, middleware: Admission, registry: CollectorRegistry) -> None:
        self.url, self.gate, self.middleware, self.registry = url, gate, middleware, registry
        self.pool = ThreadPoolExecutor(max_workers=64)

    def post(self, body: bytes = b"x", path: str = "/work") -> httpx.Response:
        return httpx.post(self.url + path, content=body, timeout=PATIENCE_S)

    def post_later(self, body: bytes = b"x") -> Future[httpx.Response]:
        return self.pool.submit(self.post, body)

    def shed(self, reason: str) -> float:
        return self.registry.get_sample_value("flywheel_test_admission_shed_total", {"reason": reason}) or 0.0

    def gauge(self, name: str) -> float | None:
        return self.registry.get_sample_value(f"flywheel_test_admission_{name}")

    def hold(self, n: int) -> list[Future[httpx.Response]]:
        """n requests in flight, held at the gate."""
        before = len(self.gate.entered)
        held = [self.post_later(f"held-{i}".encode()) for i in range(n)]
        eventually(lambda: len(self.gate.entered) == before + n, f"{n} requests in flight")
        return held

    def queue(self, body: bytes = b"x") -> Future[httpx.Response]:
        """One more request, waiting for a slot."""
        before = self.middleware.waiting
        waiting = self.post_later(body)
        eventually(lambda: self.middleware.waiting == before + 1, "a request waiting")
        return waiting



@contextlib.contextmanager
def serving(**limits: object) -> Iterator[Running]:
    gate, registry = Gate(), CollectorRegistry()
    middleware = Admission(gate, AdmissionSettings(**limits), "test", registry)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(middleware, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, "the server started")
    running = Running(f"http://127.0.0.1:{port}", gate, middleware, registry)
    try:
        yield running
    finally:
        if gate.loop is not None:
            gate.release(1000)  # whatever is still held
        running.pool.shutdown(wait=True)
        server.should_exit = True
        thread.join(PATIENCE_S)


def assert_idle(running: Running) -> None:
    """Nothing leaked: no slot taken, nobody waiting, the queue empty, the gauges at 0."""
    eventually(lambda: running.middleware.in_flight == 0, "in-flight back to 0")
    assert running.middleware.waiting == 0
    assert not running.middleware._queue
    assert (running.gauge("in_flight"), running.gauge("waiting")) == (0.0, 0.0)


def test_past_the_limit_a_request_is_answered_503_with_retry_after_while_the_others_are_held():
    with serving(max_in_flight=1, max_waiting=1, max_wait_ms=60_000, retry_after_s=3) as running:
        held = running.hold(1)
        waiting = running.queue()
        shed = running.post()  # answered while both slots are still held: it did not wait for either
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "3"
        assert shed.headers["content-type"] == "application/json"
        body = shed.json()
        assert body["code"] == "overloaded"
        assert "FLYWHEEL_TEST_MAX_IN_FLIGHT" in body["error"] and "FLYWHEEL_TEST_MAX_WAITING" in body["error"]
        assert running.shed("queue_full") == 1
        assert (running.gauge("in_flight"), running.gauge("waiting")) == (1.0, 1.0)
        running.gate.release(2)
        assert [f.result().status_code for f in (*held, waiting)] == [200, 200]
        assert_idle(running)


def test_shedding_comes_before_the_body_is_parsed_so_any_body_malformed_or_not_gets_the_same_503():
    with serving(max_in_flight=1, max_waiting=0, retry_after_s=2) as running:
        held = running.hold(1)
        shed = running.post(b'{"instances": [{"amount": 12.5,')  # malformed JSON: the app would answer it 400
        assert shed.status_code == 503 and shed.headers["retry-after"] == "2" and shed.json()["code"] == "overloaded"
        assert running.gate.entered == [b"held-0"]  # the shed body never reached the app
        running.gate.release()
        assert held[0].result().status_code == 200
        admitted = running.post_later(b'{"instances": [{"amount": 12.5,')
        eventually(lambda: len(running.gate.entered) == 2, "the same body admitted once there is room")
        running.gate.release()
        assert admitted.result().status_code == 200
        assert_idle(running)


def test_health_readiness_and_metrics_are_never_shed():
    with serving(max_in_flight=1, max_waiting=0) as running:
        running.hold(1)
        for path in ("/metrics", "/v2/health/live", "/v2/health/ready", "/ready", "/v2/models/fraud/ready",
                     "/v2/models/fraud/versions/v2/ready"):
            assert httpx.get(running.url + path).status_code == 200, path
        assert httpx.get(running.url + "/v2/models/fraud/infer").status_code == 503
        running.gate.release()
        assert_idle(running)


def test_a_waiting_request_is_admitted_with_its_body_when_a_slot_frees_first_in_first_out():
    with serving(max_in_flight=1, max_waiting=2, max_wait_ms=60_000) as running:
        held = running.hold(1)
        first = running.queue(b"first")
        second = running.queue(b"second")
        running.gate.release()  # the held request finishes: its slot goes to the oldest waiter
        eventually(lambda: len(running.gate.entered) == 2, "the first waiter admitted")
        assert running.gate.entered[-1] == b"first"
        assert running.middleware.waiting == 1
        running.gate.release(2)
        assert held[0].result().status_code == 200
        assert first.result().text == "served:first"  # the body it sent while waiting reached the app
        assert second.result().text == "served:second"
        assert running.shed("queue_full") == running.shed("wait_timeout") == 0
        assert_idle(running)


def test_a_request_that_waits_longer_than_max_wait_ms_gets_503():
    with serving(max_in_flight=1, max_waiting=4, max_wait_ms=1) as running:
        running.hold(1)
        late = running.post()
        assert late.status_code == 503
        assert late.json()["code"] == "overloaded" and "FLYWHEEL_TEST_MAX_WAIT_MS" in late.json()["error"]
        assert "retry-after" in late.headers
        assert running.shed("wait_timeout") == 1
        running.gate.release()
        assert_idle(running)


def test_a_client_that_disconnects_while_waiting_gives_its_place_back():
    with serving(max_in_flight=1, max_waiting=1, max_wait_ms=60_000) as running:
        held = running.hold(1)
        port = int(running.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"POST /work HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\ngone")
            eventually(lambda: running.middleware.waiting == 1, "the raw request waiting")
        eventually(lambda: running.middleware.waiting == 0, "the place given back")
        assert running.shed("client_gone") == 1
        later = running.queue(b"later")  # the place is free again: this one waits rather than being shed
        running.gate.release(2)
        assert held[0].result().status_code == 200 and later.result().text == "served:later"
        assert b"gone" not in running.gate.entered  # the abandoned request never reached the app
        assert_idle(running)


def test_a_burst_far_past_the_limit_leaks_nothing():
    with serving(max_in_flight=2, max_waiting=3, max_wait_ms=60_000) as running:
        held = running.hold(2)
        burst = [running.post_later(f"b{i}".encode()) for i in range(30)]
        eventually(lambda: running.shed("queue_full") + running.middleware.waiting == 30, "the burst sorted")
        assert running.middleware.waiting == 3 and running.middleware.in_flight == 2
        running.gate.release(5)
        codes = sorted(f.result().status_code for f in (*held, *burst))
        assert codes == [200] * 5 + [503] * 27
        assert len(running.gate.entered) == 5
        assert_idle(running)


def test_off_is_the_app_itself_and_on_is_the_middleware():
    gate = Gate()
    assert admission(gate, AdmissionSettings(max_in_flight=0), "off", CollectorRegistry()) is gate
    assert isinstance(admission(gate, AdmissionSettings(), "on", CollectorRegistry()), Admission)


def test_exempt_paths_are_exact_or_one_segment_per_star():
    middleware = Admission(Gate(), AdmissionSettings(), "paths", CollectorRegistry())
    for path in ("/metrics", "/v2/health/ready", "/v2/models/fraud/ready", "/v2/models/fraud/versions/v3/ready"):
        assert middleware.exempt(path), path
    for path in ("/metrics/x", "/v2/models/fraud/infer", "/v2/models/a/b/ready", "/v1/models/fraud:predict", "/"):
        assert not middleware.exempt(path), path


def test_a_service_can_change_the_defaults_keeping_bounds_and_descriptions():
    Router = AdmissionSettings.with_defaults(max_in_flight=256, max_wait_ms=20.0)
    settings = Router()
    assert (settings.max_in_flight, settings.max_wait_ms, settings.max_waiting) == (256, 20.0, 32)
    assert Router.model_fields["max_in_flight"].description == AdmissionSettings.model_fields["max_in_flight"].description
    with pytest.raises(ValueError):
        Router(max_in_flight=-1)
    with pytest.raises(TypeError, match="no field 'max_inflight'"):
        AdmissionSettings.with_defaults(max_inflight=1)


@pytest.mark.parametrize("paths", ["metrics", "/ready,health"])
def test_an_exempt_path_must_start_with_a_slash(paths):
    with pytest.raises(ValueError, match="starting with '/'"):
        AdmissionSettings(shed_exempt_paths=paths)


def test_every_setting_is_documented_and_the_default_exempts_every_probe():
    for name, field in AdmissionSettings.model_fields.items():
        assert field.description and len(field.description) > 30, name
    assert "/metrics" in DEFAULT_EXEMPT_PATHS.split(",")
    assert module.__all__ == ["DEFAULT_EXEMPT_PATHS", "Admission", "AdmissionSettings", "admission"]


def test_an_app_built_twice_in_one_process_shares_its_series_and_the_newest_middleware_reports() -> None:
    from prometheus_client import CollectorRegistry

    from flywheel_contracts.admission import Admission, AdmissionSettings

    registry = CollectorRegistry()

    async def app(scope, receive, send) -> None:  # never called
        raise AssertionError

    Admission(app, AdmissionSettings(), "twice", registry)
    newest = Admission(app, AdmissionSettings(), "twice", registry)
    newest.in_flight = 3
    assert registry.get_sample_value("flywheel_twice_admission_in_flight") == 3
