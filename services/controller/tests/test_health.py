"""The controller's /healthz, /readyz and /metrics app: JSON answers and errors in the shared error family."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from flywheel_controller._health import HealthApp

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client(ready: bool) -> httpx.AsyncClient:
    registry = CollectorRegistry()
    Counter("flywheel_controller_probe", "a series the test looks for", registry=registry).inc()
    app = HealthApp(registry, lambda: ready)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://controller")


async def test_live_ready_and_metrics_answer_get() -> None:
    async with client(ready=True) as c:
        assert (await c.get("/healthz")).json() == {"status": "alive"}
        assert (await c.get("/readyz")).json() == {"status": "ready"}
        metrics = await c.get("/metrics")
        assert metrics.status_code == 200 and "flywheel_controller_probe_total 1.0" in metrics.text


async def test_not_ready_is_a_503_in_the_error_family() -> None:
    async with client(ready=False) as c:
        answer = await c.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["code"] == "unavailable" and "ModelRollouts" in answer.json()["error"]


async def test_head_answers_the_headers_without_a_body() -> None:
    async with client(ready=True) as c:
        answer = await c.head("/healthz")
    assert answer.status_code == 200 and answer.content == b""
    assert int(answer.headers["content-length"]) == len(b'{"status": "alive"}')


async def test_other_paths_are_a_json_404_naming_the_served_ones() -> None:
    async with client(ready=True) as c:
        answer = await c.get("/admin")
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found" and "/healthz" in answer.json()["error"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_a_write_method_is_a_405_with_allow(path: str) -> None:
    async with client(ready=True) as c:
        answer = await c.post(path, content=b"{}")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, HEAD"
    assert answer.json()["code"] == "method_not_allowed"
