"""Prometheus metrics of the features service: requests and latency per endpoint.

Labels are bounded: `endpoint` is one of the app's fixed paths or "other" (unknown paths and paths
with parameters), `status` an HTTP status code. Feast's own request metrics (feast_feature_server_*)
register in the same default registry and appear on /metrics too.

Values live in prometheus_client's multiprocess mode (Feast's metrics module requires it; the directory is
chosen when the package is imported, see _metrics_dir), so with several workers /metrics adds up every
worker's values.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "flywheel_features_requests_total",
    "HTTP requests to the features service, by endpoint and status code.",
    ["endpoint", "status"],
)
LATENCY = Histogram(
    "flywheel_features_request_duration_seconds",
    "Time from request to the end of the response, by endpoint.",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
OTHER = "other"


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI, so streaming responses are timed to the end)."""

    def __init__(self, app: ASGIApp, endpoints: Iterable[str]) -> None:
        self.app = app
        self.endpoints = frozenset(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.endpoints else OTHER
        status = 500
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            LATENCY.labels(endpoint).observe(time.perf_counter() - started)
            REQUESTS.labels(endpoint, str(status)).inc()


def metrics_response(_: Request) -> Response:
    """The exposition text: this process's registry, or every worker's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
