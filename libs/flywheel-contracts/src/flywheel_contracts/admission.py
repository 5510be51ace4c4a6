"""Admission control for every Flywheel HTTP service: serve what fits the latency budget, shed the rest at once.

Without it a service past saturation queues every request it accepts (in uvicorn, in the event loop, in a
thread pool): latency grows without bound for everyone and a client's timeout fires on work the server still
does. Here a request is admitted while fewer than `max_in_flight` are being served; otherwise it waits in a
short FIFO (at most `max_waiting` requests, each at most `max_wait_ms`) for a slot, which a finishing request
hands straight to the oldest waiter (no barging); anything beyond is answered immediately with 503, a
`Retry-After` header and the family's body (`flywheel_contracts.errors.Overloaded`, code `overloaded`).

Shedding comes before the body is parsed (a waiting request only buffers up to 64 KiB of it), so under overload
any request gets that 503, a malformed one included, and its 400 only once there is room. On purpose: parsing is
the work the limit protects, and the 503 says "not now", nothing about the body.

503, not 429: the limit is this replica's capacity, not a caller's quota. 503 + Retry-After is what load
balancers and KServe/Knative clients read as "try another replica or come back shortly" (Envoy retries it
with `retry_on: 5xx`, the router retries a candidate's 503 on the stable); 429 says "you, slow down".

A pure ASGI middleware (no Starlette BaseHTTPMiddleware, which buffers bodies and adds a task per request):
one counter comparison on the way in and out when there is room. Health, readiness and `/metrics` are never
shed (`shed_exempt_paths`), nor lifespan or websocket traffic. A waiting request listens for its client: one
that disconnects gives its place back at once (its first 64 KiB of body are kept and replayed to the app if
it is admitted; a larger body is left in the socket while it waits).

Wiring, one line per service (its Settings derive from `AdmissionSettings`, or from
`AdmissionSettings.with_defaults(...)` for other defaults):

    app = admission(app, settings, service="transformer")      # registry: prometheus_client's default

Metrics (`registry` passed in, names carry the service):

    flywheel_<service>_admission_shed_total{reason}   queue_full | wait_timeout | client_gone
    flywheel_<service>_admission_in_flight            requests being served now (gauge)
    flywheel_<service>_admission_waiting              requests waiting for a slot now (gauge)

In prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR) the gauges are written per request and
summed over live workers; otherwise they are read only when scraped.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from fnmatch import translate
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, create_model, field_validator

from .errors import Overloaded, error_body

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DEFAULT_EXEMPT_PATHS", "Admission", "AdmissionSettings", "admission"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_EXEMPT_PATHS = (
    "/metrics,/health,/healthz,/live,/livez,/ready,/readyz,/v2/health/live,/v2/health/ready,"
    "/v2/models/*/ready,/v2/models/*/versions/*/ready"
)
"""Every Flywheel service's health, readiness and metrics paths: a probe must never be shed."""

_LISTEN_BYTES = 64 * 1024  # body a waiting request reads while it listens for a disconnect
_ADMITTED, _EXPIRED, _GONE = "admitted", "wait_timeout", "client_gone"


class AdmissionSettings(BaseModel):
    """The admission fields of a service's Settings (inherit them: `class Settings(BaseSettings,
    AdmissionSettings)`); the service's env prefix applies, e.g. FLYWHEEL_ROUTER_MAX_IN_FLIGHT."""

    max_in_flight: int = Field(
        32,
        ge=0,
        le=100_000,
        description="Most requests served at once; more wait (MAX_WAITING) or get 503 + Retry-After at once. "
        "Size it to what the service answers within its latency budget (bench/overload); 0 turns admission "
        "control off (every request is taken, as before).",
    )
    max_waiting: int = Field(
        32,
        ge=0,
        le=100_000,
        description="Most requests waiting for a slot (first in, first admitted); beyond, 503 at once. A short "
        "queue absorbs bursts without letting latency grow; 0 sheds whatever finds every slot taken.",
    )
    max_wait_ms: float = Field(
        100.0,
        gt=0,
        le=60_000,
        description="Longest a request waits for a slot (ms) before it gets 503: waiting is latency the caller "
        "pays, so keep it within the latency budget.",
    )
    retry_after_s: int = Field(
        1,
        ge=0,
        le=3600,
        description="Seconds in the Retry-After header of a shed request (RFC 9110: whole seconds).",
    )
    shed_exempt_paths: str = Field(
        DEFAULT_EXEMPT_PATHS,
        description="Comma list of paths never shed nor counted (health, readiness, /metrics); '*' matches one path "
        "segment, e.g. /v2/models/*/ready.",
    )

    @field_validator("shed_exempt_paths")
    @classmethod
    def _paths(cls, value: str) -> str:
        paths = [path.strip() for path in value.split(",") if path.strip()]
        if not all(path.startswith("/") for path in paths):
            raise ValueError("a comma list of paths starting with '/'")
        return ",".join(paths)

    @classmethod
    def with_defaults(cls, **defaults: Any) -> type[AdmissionSettings]:
        """These fields with other defaults (same bounds and descriptions), for a service whose budget differs:
        `class Settings(BaseSettings, AdmissionSettings.with_defaults(max_in_flight=256))`."""
        fields: dict[str, Any] = {}
        for name, value in defaults.items():
            if name not in cls.model_fields:
                raise TypeError(f"AdmissionSettings has no field {name!r}: {', '.join(cls.model_fields)}")
            info = copy.copy(cls.model_fields[name])
            info.default = value
            fields[name] = (info.annotation, info)
        return create_model(cls.__name__, __base__=cls, **fields)


def admission(
    app: ASGIApp, settings: AdmissionSettings, service: str, registry: CollectorRegistry | None = None
) -> ASGIApp:
    """`app` behind admission control; `app` itself when MAX_IN_FLIGHT is 0 (off: not a cycle more). The metrics
    go to `registry`, prometheus_client's default one when None."""
    if settings.max_in_flight == 0:
        return app
    return Admission(app, settings, service, registry)


class Admission:
    """The middleware (see the module docstring); `in_flight` and `waiting` are its state, for tests and gauges."""

    def __init__(
        self, app: ASGIApp, settings: AdmissionSettings, service: str, registry: CollectorRegistry | None = None
    ) -> None:
        # Imported here so that a Settings class can inherit AdmissionSettings without importing a metrics library.
        from prometheus_client import REGISTRY

        if settings.max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1 (0, off, is admission() returning the app itself)")
        self.app = app
        self.max_in_flight = settings.max_in_flight
        self.max_waiting = settings.max_waiting
        self.max_wait_s = settings.max_wait_ms / 1000
        self.in_flight = 0
        self.waiting = 0
        self._queue: deque[asyncio.Future[str]] = deque()
        self._exempt, self._exempt_pattern = _compile(settings.shed_exempt_paths)

        env = f"FLYWHEEL_{service.upper()}_"
        retry = settings.retry_after_s
        full = Overloaded(
            f"overloaded: {self.max_in_flight} requests in flight and {self.max_waiting} waiting, the most this "
            f"replica admits ({env}MAX_IN_FLIGHT, {env}MAX_WAITING); retry after {retry} s or on another replica"
        )
        late = Overloaded(
            f"overloaded: no request slot freed within {settings.max_wait_ms:g} ms ({env}MAX_WAIT_MS); retry "
            f"after {retry} s or on another replica"
        )
        self._bodies = {_ADMITTED: b"", "queue_full": _encode(full), _EXPIRED: _encode(late)}
        self._headers = [(b"content-type", b"application/json"), (b"retry-after", str(retry).encode())]

        shed, in_flight, waiting = _collectors(registry or REGISTRY, f"flywheel_{service}_admission")
        self._shed = {reason: shed.labels(reason) for reason in ("queue_full", _EXPIRED, _GONE)}
        self._gauges: tuple[Any, Any] | None = None
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # no callbacks across processes: write the values
            self._gauges = (in_flight, waiting)
        else:
            in_flight.set_function(lambda: self.in_flight)
            waiting.set_function(lambda: self.waiting)

    def exempt(self, path: str) -> bool:
        return path in self._exempt or (
            self._exempt_pattern is not None and self._exempt_pattern.match(path) is not None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope["path"]):
            return await self.app(scope, receive, send)
        if self.in_flight < self.max_in_flight:  # a free slot means nobody waits: a release hands slots over
            self.in_flight += 1
        elif self.waiting < self.max_waiting:
            outcome, receive = await self._wait(receive)
            if outcome is not _ADMITTED:
                self._shed[outcome].inc()
                if outcome is _EXPIRED:
                    await self._refuse(send, outcome)
                return
        else:
            self._shed["queue_full"].inc()
            return await self._refuse(send, "queue_full")
        gauges = self._gauges
        if gauges is not None:
            gauges[0].inc()
        try:
            await self.app(scope, receive, send)
        finally:
            if gauges is not None:
                gauges[0].dec()
            self._release()

    def _release(self) -> None:
        """A served request is done: its slot goes to the oldest waiter, else back to the pool."""
        queue = self._queue
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(_ADMITTED)
                return
        self.in_flight -= 1

    async def _wait(self, receive: Receive) -> tuple[str, Receive]:
        """Wait for a slot, for at most max_wait_s, listening for the client going away meanwhile."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[str] = loop.create_future()
        self._queue.append(waiter)
        self.waiting += 1
        if self._gauges is not None:
            self._gauges[1].inc()
        timer = loop.call_later(self.max_wait_s, _settle, waiter, _EXPIRED)
        early: list[MutableMapping[str, Any]] = []
        listener = loop.create_task(_listen(receive, early, waiter))
        try:
            outcome = await waiter
        except asyncio.CancelledError:  # the server is stopping: give back a slot handed over meanwhile
            if waiter.done() and not waiter.cancelled() and waiter.result() is _ADMITTED:
                self._release()
            else:
                self._forget(waiter)
            raise
        finally:
            self.waiting -= 1
            if self._gauges is not None:
                self._gauges[1].dec()
            timer.cancel()
            listener.cancel()
        if outcome is not _ADMITTED:
            self._forget(waiter)
            return outcome, receive
        return _ADMITTED, (_replay(early, receive) if early else receive)

    def _forget(self, waiter: asyncio.Future[str]) -> None:
        try:
            self._queue.remove(waiter)  # at most max_waiting entries
        except ValueError:
            pass

    async def _refuse(self, send: Send, reason: str) -> None:
        body = self._bodies[reason]
        headers = [*self._headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": Overloaded.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _compile(paths: str) -> tuple[frozenset[str], re.Pattern[str] | None]:
    names = [path for path in paths.split(",") if path]
    exact = frozenset(path for path in names if "*" not in path)
    patterns = [translate(path).replace(".*", "[^/]*") for path in names if "*" in path]  # '*': one segment
    return exact, (re.compile("|".join(patterns)) if patterns else None)


def _encode(error: Overloaded) -> bytes:
    return json.dumps(error_body(error), separators=(",", ":")).encode()


def _settle(waiter: asyncio.Future[str], outcome: str) -> None:
    if not waiter.done():
        waiter.set_result(outcome)


async def _listen(receive: Receive, early: list[MutableMapping[str, Any]], waiter: asyncio.Future[str]) -> None:
    """Read what the client sends while its request waits, so that a disconnect is noticed; stop after
    _LISTEN_BYTES of body (the rest stays in the socket, flow control applies)."""
    size = 0
    while True:
        try:
            message = await receive()
        except Exception:  # noqa: BLE001 - a server that raises (Starlette's ClientDisconnect) rather than saying http.disconnect
            _settle(waiter, _GONE)
            return
        early.append(message)
        if message["type"] == "http.disconnect":
            _settle(waiter, _GONE)
            return
        size += len(message.get("body", b""))
        if size >= _LISTEN_BYTES and message.get("more_body", False):
            return


def _replay(early: list[MutableMapping[str, Any]], receive: Receive) -> Receive:
    pending = deque(early)

    async def replayed() -> MutableMapping[str, Any]:
        if pending:
            return pending.popleft()
        return await receive()

    return replayed


# Per registry (weakly: a registry dropped with its test or app takes its entries along; an id() key could be
# reused by the next registry and hand it collectors registered elsewhere).
_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, tuple[Any, Any, Any]]] = weakref.WeakKeyDictionary()


def _collectors(registry: CollectorRegistry, prefix: str) -> tuple[Any, Any, Any]:
    """The shed counter and the two gauges of `prefix` in `registry`, made once: an app built twice in one process
    (tests, a reloaded worker) reuses them instead of failing on a duplicate series; the gauges then read the
    newest middleware, the one serving."""
    made = _COLLECTORS.setdefault(registry, {})
    if prefix not in made:
        from prometheus_client import Counter, Gauge

        made[prefix] = (
            Counter(
                f"{prefix}_shed_total",
                "Requests not served because of admission control, by reason: queue_full and wait_timeout (answered "
                "503 + Retry-After), client_gone (disconnected while waiting).",
                ["reason"],
                registry=registry,
            ),
            Gauge(f"{prefix}_in_flight", "Requests being served now.", registry=registry, multiprocess_mode="livesum"),
            Gauge(
                f"{prefix}_waiting", "Requests waiting for a slot now.", registry=registry, multiprocess_mode="livesum"
            ),
        )
    return made[prefix]
