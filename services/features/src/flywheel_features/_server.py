"""The HTTP server: Feast's own feature server app, plus readiness, liveness and Prometheus metrics.

Feast's `get_app` provides /get-online-features, /push, /materialize and the rest, unchanged. This
module adds /ready (the registry has the feature service and the online store answers a read), a plain
/health (liveness, replacing Feast's, which reads the registry), /metrics, the stream step's
/stream/transactions (see _stream: live transactions -> card_activity rows, online and offline), and handles
request errors inside the app, so bad input gets a 4xx naming the problem and the connection stays open (see _errors).
In front of it all sits the guard (see _guard): the routes Flywheel uses, each behind its token, and a
body limit; metrics count what the guard refuses too.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from feast import FeatureStore
from feast.feature_server import get_app
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flywheel_contracts.admission import Admission
from flywheel_contracts.auth import TokenFile
from flywheel_contracts.tls import TLS

from ._config import Settings, load_settings
from ._errors import (
    HANDLED,
    NotReady,
    Refused,
    StreamOff,
    error_response,
    http_error_response,
    status_of,
    validation_error_response,
)
from ._guard import ROUTES, Guard
from ._metrics import MetricsMiddleware, metrics_response
from ._store import open_store, tune_online_store
from ._stream import CardStream, parse_body

READY_PROBE_ENTITY = "__flywheel_ready_probe__"
PLAIN = TLS()
"""No TLS settings: plain HTTP (tests, local runs)."""


def check_ready(store: FeatureStore, feature_service: str) -> None:
    """Raise NotReady unless the registry has `feature_service` and the online store answers a read."""
    try:
        service = store.get_feature_service(feature_service, allow_cache=True)
    except Exception as e:
        raise NotReady(f"registry: feature service '{feature_service}' not available ({e}); run apply") from e
    projection = next((p for p in service.feature_view_projections if p.features), None)
    if projection is None:
        return
    view = store.get_feature_view(projection.name, allow_registry_cache=True)
    try:
        store.get_online_features(
            features=[f"{projection.name}:{projection.features[0].name}"],
            entity_rows=[{key: READY_PROBE_ENTITY for key in view.join_keys}],
        )
    except Exception as e:
        raise NotReady(f"online store: a read from '{projection.name}' failed ({type(e).__name__}: {e})") from e


def create_app(settings: Settings, store: FeatureStore | None = None) -> FastAPI:
    """Feast's feature server app over the configured repository, with Flywheel's additions."""
    store = store or open_store(settings)
    tune_online_store(store)
    app = get_app(store, registry_ttl_sec=settings.registry_ttl_seconds)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> Response:
        try:
            await run_in_threadpool(check_ready, store, settings.feature_service)
        except NotReady as e:
            return JSONResponse({"status": "not ready", "reason": str(e)}, status_code=503)
        return JSONResponse({"status": "ready"})

    # The stream step keeps card state in this process: one writer, so never in a multi-worker server.
    stream = CardStream(store, settings.data_dir, settings.stream_flush_rows, settings.stream_flush_s).open() \
        if settings.workers == 1 else None

    async def stream_transactions(request: Request) -> Response:
        try:
            if stream is None:
                raise StreamOff(f"the stream step runs only in a single-process server (FLYWHEEL_FEATURES_WORKERS="
                                f"{settings.workers}): its card state and log have one writer; post to that one")
            posted = parse_body(await request.body())
        except Refused as refusal:
            return JSONResponse(refusal.body(), status_code=status_of(refusal))
        accepted = await run_in_threadpool(stream.ingest, posted.cards, posted.merchants)
        return JSONResponse({"accepted": accepted})

    feast_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with feast_lifespan(app):
            try:
                yield
            finally:
                if stream is not None:
                    await run_in_threadpool(stream.flush)  # the rows not yet in an offline part

    app.router.lifespan_context = lifespan
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/health"]
    app.router.routes.extend([
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_response, methods=["GET"]),
        Route("/stream/transactions", stream_transactions, methods=["POST"]),
    ])
    for kind in HANDLED:
        app.add_exception_handler(kind, error_response)
    app.add_exception_handler(HTTPException, http_error_response)
    app.add_exception_handler(RequestValidationError, validation_error_response)
    app.add_middleware(
        Guard,
        read=TokenFile(settings.read_token_file, name="features read token"),
        write=TokenFile(settings.write_token_file, name="features write token"),
        max_body_bytes=settings.max_body_bytes,
    )
    app.add_middleware(MetricsMiddleware, endpoints=ROUTES)  # added last: outside the guard
    if settings.max_in_flight:  # outermost: past the limit, answered before anything parses the request
        app.add_middleware(Admission, settings=settings, service="features")
    return app


def app_from_env() -> FastAPI:
    """Factory for worker processes: each reads the settings once at its start."""
    settings = load_settings()
    settings.export_data_dir()
    return create_app(settings)


def _exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def serve(settings: Settings, tls: TLS = PLAIN) -> None:
    """Run the server until stopped: SIGINT (exit 0) or SIGTERM (exit 143, 128 + the signal). HTTPS when `tls`
    has a certificate (FLYWHEEL_TLS_*), in every worker: each loads the same files.

    uvicorn shuts down gracefully on either signal, then raises it again for the handler it found. With
    Python's default, SIGTERM then killed the process outright, skipping atexit: the metrics directory
    (see _metrics_dir; Feast's /tmp/feast_metrics_* before it) stayed behind on every stop. `_exit` makes
    it an ordinary exit. SIGINT's default raises KeyboardInterrupt, which uvicorn.run absorbs.
    """
    signal.signal(signal.SIGTERM, _exit)
    settings.export_data_dir()
    common = {"host": settings.host, "port": settings.port, "log_level": settings.log_level, "access_log": False,
              **tls.uvicorn_options()}
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)
        return
    # Several processes: they inherit PROMETHEUS_MULTIPROC_DIR (see _metrics_dir), so /metrics sums all workers.
    uvicorn.run("flywheel_features._server:app_from_env", factory=True, workers=settings.workers, **common)
