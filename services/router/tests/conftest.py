"""Builders: a router app wired to in-process upstreams (httpx.MockTransport), driven through ASGI."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from flywheel_contracts import Route
from flywheel_router import InferenceApp, RouteTable, Settings
from flywheel_router._metrics import Metrics
from flywheel_router._upstream import Upstreams

DEFAULT = "http://transformer.test"
WAIT_S = 5.0
"""How long `eventually` waits for a condition before failing: far past what any of these waits take."""


async def eventually(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    """Return once `condition()` is true; fail naming `what` (the thing that never happened) past `timeout_s`.

    For a test that must wait for something another task does (a source loading, a worker taking a copy, a
    server closing a connection): it waits on that state, never for a guessed time."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.005)


@dataclass
class FakeUpstream:
    """Answers like the transformer: the version it was asked for, a score per instance, headers."""

    calls: list[httpx.Request] = field(default_factory=list)
    behaviour: dict[str, Callable[[httpx.Request], httpx.Response]] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=lambda: {"v1": 0.1, "v2": 0.2})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        version = request.headers.get("x-flywheel-model-version", "v1")
        special = self.behaviour.get(version)
        if special is not None:
            return special(request)
        score = self.scores.get(version, 0.5)
        decision = "decline" if score >= 0.5 else "approve"
        body = {"predictions": [{"id": "t1", "score": score, "decision": decision, "model_version": version}]}
        return httpx.Response(
            200,
            content=orjson.dumps(body),
            headers={
                "content-type": "application/json",
                "x-flywheel-model-version": version,
                "x-flywheel-scores": f"{score:.6g}",
                "x-flywheel-decisions": decision,
            },
        )


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def hang(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


class Transport(httpx.AsyncBaseTransport):
    """httpx.MockTransport whose answers stream like a server's (the router reads raw bytes)."""

    def __init__(self, handler) -> None:
        self.handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        answer = self.handler(request)
        if hasattr(answer, "__await__"):
            answer = await answer
        return httpx.Response(answer.status_code, headers=answer.headers, stream=httpx.ByteStream(answer.content))


def route(**fields: object) -> Route:
    return Route.model_validate({"model": "fraud", "stable": {"version": "v1"}, **fields})


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def make_app(upstream: FakeUpstream):
    apps: list[InferenceApp] = []

    def build(*routes: Route, seed: int = 7, **settings: object) -> InferenceApp:
        s = Settings(default_upstream=DEFAULT, **settings)
        upstreams = Upstreams(1.0, 5.0, 10, transport=Transport(upstream))
        app = InferenceApp(s, RouteTable(), upstreams, Metrics(), rng=random.Random(seed))
        app.apply({r.model: r for r in routes})
        apps.append(app)
        return app

    return build


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router.test")


TRANSACTION = {"instances": [{"transaction_id": "t1", "amount": 10.0}]}
