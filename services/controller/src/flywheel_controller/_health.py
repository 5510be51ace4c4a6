"""/healthz, /readyz and /metrics on one small ASGI app (no framework: three fixed paths).

Live while the event loop answers; ready once the first list of ModelRollouts is in (a standby replica that is
not the leader is ready too: it is healthy and takes over when the Lease falls to it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class HealthApp:
    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
        self.registry = registry
        self.ready = ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        if path == "/healthz":
            await _answer(send, 200, b"ok\n")
        elif path == "/readyz":
            ok = self.ready()
            await _answer(send, 200 if ok else 503, b"ready\n" if ok else b"not ready: ModelRollouts not listed yet\n")
        elif path == "/metrics":
            await _answer(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        else:
            await _answer(send, 404, b"not found: /healthz, /readyz, /metrics\n")


async def _answer(send: Send, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
