"""/healthz, /readyz and /metrics on one small ASGI app (no framework: three fixed paths, GET or HEAD).

Live while the event loop answers; ready once the first list of ModelRollouts is in (a standby replica that is
not the leader is ready too: it is healthy and takes over when the Lease falls to it).

Answers other than the metrics text are JSON, errors in the body of flywheel_contracts.errors like every other
Flywheel service: a 503 while not ready, 404 for any other path, 405 with `Allow` for any other method.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from flywheel_contracts.errors import FlywheelError, MethodNotAllowed, NotFound, Unavailable, error_body

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PATHS = ("/healthz", "/readyz", "/metrics")
METHODS = ("GET", "HEAD")
JSON = "application/json"


class HealthApp:
    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
        self.registry = registry
        self.ready = ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        head = scope.get("method") == "HEAD"
        try:
            status, body, content_type = self._answer(scope.get("path", ""), scope.get("method", "GET"))
            headers: dict[str, str] = {}
        except FlywheelError as e:
            status, body, content_type, headers = e.status, _json(error_body(e)), JSON, e.headers
        await _send(send, status, b"" if head else body, content_type, headers, length=len(body))

    def _answer(self, path: str, method: str) -> tuple[int, bytes, str]:
        if path not in PATHS:
            raise NotFound(f"no route {path}: this server answers {', '.join(PATHS)}")
        if method not in METHODS:
            raise MethodNotAllowed(f"{path} answers {' and '.join(METHODS)}, not {method}",
                                   headers={"allow": ", ".join(METHODS)})
        if path == "/healthz":
            return 200, _json({"status": "alive"}), JSON
        if path == "/readyz":
            if not self.ready():
                raise Unavailable("not ready: the ModelRollouts have not been listed yet")
            return 200, _json({"status": "ready"}), JSON
        return 200, generate_latest(self.registry), CONTENT_TYPE_LATEST


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


async def _send(send: Send, status: int, body: bytes, content_type: str, headers: dict[str, str], *,
                length: int) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(length).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
