"""Wiring: settings -> route source, upstream client, apps -> two uvicorn servers on one event loop.

The inference port (behind admission control: flywheel_contracts.admission sheds what is past MAX_IN_FLIGHT
and MAX_WAITING with 503 + Retry-After) and the admin port (never shed: the controller must be able to move
traffic away from an overloaded version) are separate servers (so a NetworkPolicy can admit only the
controller to the admin port) sharing one process, route table and statistics. Readiness waits for the
first complete load of the routes: a restarted replica takes no traffic until it routes like the others.
SIGTERM/SIGINT stop both servers gracefully (in-flight requests finish), then the shadow workers and the
upstream connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Generator, Mapping
from typing import Any

import uvicorn

from flywheel_contracts import Route
from flywheel_contracts.admission import admission
from flywheel_contracts.auth import TokenFile
from flywheel_contracts.tls import TLS

from ._admin import AdminApp
from ._config import Settings
from ._h1 import H1Upstreams
from ._metrics import Metrics
from ._proxy import InferenceApp
from ._sources import make_source
from ._table import RouteTable
from ._upstream import UpstreamClient, Upstreams

PLAIN = TLS()
"""No TLS settings: plain HTTP served, https peers checked with the system's trust store (tests, local runs)."""

log = logging.getLogger("flywheel_router")


class _Server(uvicorn.Server):
    """A uvicorn server whose signals are handled once for both servers (see `serve`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _config(app: Callable[..., Any], host: str, port: int, tls: TLS) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,  # no line per request: the metrics carry it
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_config=None,
        timeout_keep_alive=75,  # longer than typical client/load-balancer idle timeouts, so we never close first
        timeout_graceful_shutdown=10,
        **tls.uvicorn_options(),  # HTTPS on both ports when FLYWHEEL_TLS_CERT_FILE/KEY_FILE are set
    )


def build(settings: Settings, tls: TLS = PLAIN) -> tuple[InferenceApp, AdminApp, UpstreamClient]:
    metrics = Metrics()
    # Built once: https upstreams are verified with FLYWHEEL_TLS_CA_FILE (else the system's trust store).
    verify = tls.client_context()
    upstreams: UpstreamClient
    if settings.upstream_client == "h1":
        upstreams = H1Upstreams(settings.connect_timeout_s, settings.upstream_timeout_s, settings.max_connections,
                                ssl_context=verify)
    else:
        upstreams = Upstreams(settings.connect_timeout_s, settings.upstream_timeout_s, settings.max_connections,
                              verify=verify)
    inference = InferenceApp(settings, RouteTable(), upstreams, metrics)
    admin = AdminApp(TokenFile(settings.token_file, name="router admin token"), make_source(settings), inference)
    return inference, admin, upstreams


async def serve(settings: Settings, tls: TLS = PLAIN) -> None:
    inference, admin, upstreams = build(settings, tls)
    if admin.token.current() is None:
        log.warning("no admin token (FLYWHEEL_ROUTER_TOKEN_FILE): the admin API refuses every request")
    admitted = admission(inference, settings, "router", inference.metrics.registry)  # the inference port only
    servers = [
        _Server(_config(admitted, settings.http_host, settings.http_port, tls)),
        _Server(_config(admin, settings.admin_host, settings.admin_port, tls)),
    ]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    inference.shadow.start()
    first = asyncio.Event()

    def apply(routes: Mapping[str, Route]) -> None:
        inference.apply(routes)
        if not first.is_set():
            log.info("routes loaded from %s: %s", settings.route_source, ", ".join(sorted(routes)) or "none")
            first.set()

    follower = asyncio.create_task(admin.source.run(apply), name="route-source")
    log.info(
        "router on :%d (admin :%d) -> default upstream %s; routes from %s",
        settings.http_port,
        settings.admin_port,
        settings.default_upstream,
        settings.route_source,
    )
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await inference.shadow.aclose()
        await admin.source.aclose()
        await upstreams.aclose()
        log.info("router stopped")
