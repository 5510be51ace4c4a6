"""HTTP API (Starlette): the CloudEvents sink, the batch and labels endpoints, report, health, metrics.

    POST /            CloudEvents sink (KServe logger, Seldon, Flywheel transformer); also /v1/events;
                      binary, structured or batch mode, by content-type
    POST /v1/batch    plain JSON rows                 POST /v1/labels   delayed ground truth
                      (the writes need a credential: the ingest token, the labels token; see `_auth`)
    GET  /v1/report   JSON report                     GET  /report      HTML report with plots
    GET  /health      process alive                   GET  /ready       spool replayed, references loaded
    GET  /metrics     Prometheus

The server listens at once; the spool replay runs in a thread and /ready turns 200 when it is done.
Errors are JSON bodies from `_errors.error_body`, statuses from flywheel_contracts.errors; never a 500 for bad
input, and a 500 with a generic body and a logged traceback for an exception outside the family (a bug).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from flywheel_contracts import body as request_body
from flywheel_contracts.auth import TokenFile
from flywheel_contracts.errors import code_of_status

from ._auth import Credential, RequireCredentials
from ._errors import (
    DriftError,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestError,
    UnknownRoute,
    UnsupportedMediaType,
    error_body,
    status_of,
)
from ._events import BATCH, is_json, media_type
from ._html import render
from ._service import DriftService

log = logging.getLogger("flywheel_drift.server")

# The report is an HTML page with inline CSS and inline SVG and nothing else: no script, no fetch, no frame.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (declared or streamed)."""
    length = request.headers.get("content-length")
    return await request_body.read_body(request.receive, length.encode("latin-1") if length is not None else None,
                                        limit, "FLYWHEEL_DRIFT_MAX_BODY_BYTES", PayloadTooLarge)


def _error(e: Exception) -> JSONResponse:
    return JSONResponse(error_body(e), status_code=status_of(e), headers=getattr(e, "headers", None) or None)


def create_app(service: DriftService, start: bool = True) -> Starlette:
    """The ASGI app over `service`; with `start`, the lifespan starts and stops it."""
    limit = service.settings.max_body_bytes

    async def _guard(handler: Any) -> Response:
        try:
            return await handler()
        except DriftError as e:
            if status_of(e) < 500 and status_of(e) != 429:
                service.metrics.rejected.inc()
            return _error(e)
        except request_body.Disconnected:
            return Response(status_code=400)  # the client left mid-body: no one reads this answer
        except Exception as e:  # a bug: answered 500, the traceback logged here once
            log.exception("request failed unexpectedly")
            return _error(e)

    async def events(request: Request) -> Response:
        async def handle() -> Response:
            body = await read_body(request, limit)
            if media_type(request.headers.get("content-type", "")) == BATCH:
                return JSONResponse(await service.accept_cloudevent_batch(body), status_code=202)
            headers = {k.lower(): v for k, v in request.headers.items()}
            return JSONResponse(await service.accept_cloudevent(headers, body), status_code=202)
        return await _guard(handle)

    async def batch(request: Request) -> Response:
        async def handle() -> Response:
            _json_only(request)
            return JSONResponse(await service.accept_batch(await read_body(request, limit)), status_code=202)
        return await _guard(handle)

    async def labels(request: Request) -> Response:
        async def handle() -> Response:
            _json_only(request)
            return JSONResponse(await service.accept_labels(await read_body(request, limit)))
        return await _guard(handle)

    async def skew_sample(request: Request) -> Response:
        async def handle() -> Response:
            q = request.query_params
            return JSONResponse(await asyncio.to_thread(service.skew_sample, q.get("model"), q.get("version"),
                                                        q.get("limit")))
        return await _guard(handle)

    async def skew(request: Request) -> Response:
        async def handle() -> Response:
            _json_only(request)
            body = await read_body(request, limit)
            return JSONResponse(await asyncio.to_thread(service.accept_skew, body), status_code=202)
        return await _guard(handle)

    async def report(request: Request) -> Response:
        async def handle() -> Response:
            data = await asyncio.to_thread(service.report, request.query_params.get("model"),
                                           request.query_params.get("version"))
            return JSONResponse(data)
        return await _guard(handle)

    async def report_html(request: Request) -> Response:
        async def handle() -> Response:
            data = await asyncio.to_thread(service.report, request.query_params.get("model"),
                                           request.query_params.get("version"))
            return HTMLResponse(render(data), headers={"content-security-policy": REPORT_CSP})
        return await _guard(handle)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def ready(request: Request) -> Response:
        body = {"ready": service.ready, "ready_after_s": service.ready_after_s, "replayed_events": service.replayed,
                "references": {f"{r.model}/{r.version}": r.state.get("online", {}).get("source", "")
                               for r in service.loader.loaded()}}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(asyncio.to_thread(service.start)) if start else None
        if task is not None:
            task.add_done_callback(_exit_if_failed)
        try:
            yield
        finally:
            if task is not None:
                await task
                await asyncio.to_thread(service.stop)

    routes = [
        Route("/", events, methods=["POST"]),
        Route("/v1/events", events, methods=["POST"]),
        Route("/v1/batch", batch, methods=["POST"]),
        Route("/v1/labels", labels, methods=["POST"]),
        Route("/v1/skew/sample", skew_sample, methods=["GET"]),
        Route("/v1/skew", skew, methods=["POST"]),
        Route("/v1/report", report, methods=["GET"]),
        Route("/report", report_html, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(RequireCredentials, guarded=_credentials(service),
                                           on_refused=service.metrics.unauthorized.inc)])
    app.add_exception_handler(HTTPException, _routing_error)
    return app


async def _routing_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (no route, wrong method) in the family's JSON shape; 405 keeps `Allow`."""
    assert isinstance(exc, HTTPException)
    error: RequestError
    if exc.status_code == 405:
        # Starlette builds Allow from a set: sorted here so the header is the same on every answer
        allow = ", ".join(sorted(m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()))
        error = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}; use {allow or 'another path'}", allow=allow)
    elif exc.status_code == 404:
        error = UnknownRoute(f"no route {request.url.path[:80]}; see GET /v1/report, POST /v1/batch, POST /v1/labels, "
                             "POST / (CloudEvents)")
    else:
        return JSONResponse({"error": str(exc.detail), "code": code_of_status(exc.status_code)},
                            status_code=exc.status_code, headers=exc.headers)
    return _error(error)


def _credentials(service: DriftService) -> dict[str, Credential]:
    s = service.settings
    ingest = Credential(TokenFile(s.ingest_token_file, "drift ingest token"), "FLYWHEEL_DRIFT_INGEST_TOKEN_FILE")
    labels = Credential(TokenFile(s.labels_token_file, "drift labels token"), "FLYWHEEL_DRIFT_LABELS_TOKEN_FILE")
    skew = Credential(TokenFile(s.skew_token_file, "drift skew token"), "FLYWHEEL_DRIFT_SKEW_TOKEN_FILE")
    for credential, routes in ((ingest, "POST /, /v1/events and /v1/batch"), (labels, "POST /v1/labels")):
        if not credential.token.configured:
            log.warning("no %s (%s is unset, missing or empty): %s answer 401 until it names a token file",
                        credential.token.name, credential.setting, routes)
    return {"/": ingest, "/v1/events": ingest, "/v1/batch": ingest, "/v1/labels": labels,
            "/v1/skew/sample": skew, "/v1/skew": skew}


def _exit_if_failed(task: asyncio.Task[None]) -> None:
    # A service that cannot open its spool or replay it must not linger half-started: exit, so the
    # orchestrator restarts it and the failure is visible.
    if not task.cancelled() and task.exception() is not None:
        log.critical("drift service failed to start: %r", task.exception())
        os._exit(3)


def _json_only(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if not is_json(content_type):
        raise UnsupportedMediaType(f"content-type {content_type or '(none)'!r}: send application/json")
