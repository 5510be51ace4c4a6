"""kserve.ModelServer, tuned: the KServe app with the fast path in front and no per-request logging.

What is changed from a stock `ModelServer().start([model])`, and why:

- The uvicorn app is `FastPath(kserve_app)` (see _fastpath), in every worker process. With
  FLYWHEEL_PREDICTOR_FAST_PATH=false it passes inference through to KServe and keeps only its route
  fixes, for comparison.
- uvicorn's access log and KServe's TimingMiddleware are off: each wrote a log line per request,
  and the Prometheus histograms carry the same information. So is uvicorn's X-Forwarded-* handling,
  which only rewrites the client address nothing here reads.
- A single worker runs on uvloop: kserve 0.21 starts it with plain `asyncio.run`, and picks the
  loop (`--event-loop auto`) only for its multi-process server.
- gRPC is not started (port 8081 is not part of the contract; nothing here listens on it).
- V2 model metadata reports the served version and platform; KServe's leaves both out.
- Errors: the predictor's family maps to its status table, and FastAPI's 422 body for a malformed V2
  request (`{"detail": [...]}`) becomes `{"error": ...}` like every other error. KServe's handlers
  for its own client errors (unknown model, bad input, ...) log a traceback per request; the same
  statuses and bodies are kept without the log. Server errors (5xx) are still logged.

With WORKERS > 1 kserve's RESTServerMultiProcess spawns the workers; it builds a plain RESTServer,
which is swapped for ours before start so that each child runs the same app.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess
from kserve.protocol.rest.server import RESTServer
from uvicorn.importer import import_from_string

from ._config import Settings
from ._errors import PredictorError, error_body, status_of
from ._fastpath import FastPath
from ._model import OnnxModel

log = logging.getLogger("flywheel_predictor")

GRACE_PERIOD_SECONDS = 10


class FlywheelDataPlane(DataPlane):
    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        metadata = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        if isinstance(model, OnnxModel):
            metadata.update(versions=[model.version], platform="onnxruntime_onnx")
        return metadata


class FlywheelRESTServer(RESTServer):
    def __init__(self, settings: Settings, dataplane: DataPlane, repository_extension: Any) -> None:
        super().__init__(
            FASTAPI_APP_IMPORT_STRING,
            dataplane,
            repository_extension,
            settings.http_port,
            workers=settings.workers,
            grace_period=GRACE_PERIOD_SECONDS,
        )
        self.settings = settings
        self.config.host = settings.http_host
        # X-Forwarded-* only rewrite the client address, which nothing here reads (no access log).
        self.config.proxy_headers = False


    def _add_middlewares(self, app: FastAPI) -> None:
        """KServe adds a TimingMiddleware that logs one trace line per request; not here."""

    def create_application(self) -> None:
        super().create_application()
        # uvicorn logs each request whenever "uvicorn.access" has a handler, whatever Config.access_log
        # says once logging is configured (kserve configures it, in every worker).
        access = logging.getLogger("uvicorn.access")
        access.handlers.clear()
        access.propagate = False
        app = import_from_string(FASTAPI_APP_IMPORT_STRING)
        model = self.dataplane.model_registry.get_model(self.settings.model_name)
        app.add_exception_handler(PredictorError, _predictor_error_handler(model))
        app.add_exception_handler(RequestValidationError, _validation_error_handler)
        for error_class, status in KSERVE_CLIENT_ERRORS.items():
            app.add_exception_handler(error_class, _quiet_handler(status))
        self.config.app = FastPath(app, model, self.settings.max_body_bytes, serve_inference=self.settings.fast_path)


KSERVE_CLIENT_ERRORS: dict[type[Exception], int] = {
    # kserve's own exception classes and the statuses its handlers give them (kserve/errors.py, 0.21).
    InvalidInput: 400,
    ModelNotFound: 404,
    NotImplementedError: 501,
    UnsupportedProtocol: 501,
    ModelNotReady: 503,
    ServerNotReady: 503,
    ServerNotLive: 503,
}


def _quiet_handler(status: int):
    async def handle(request: Request, error: Exception) -> Response:
        return Response(error_body(str(error)), status_code=status, media_type="application/json")

    return handle


def _predictor_error_handler(model: OnnxModel):
    async def handle(request: Request, error: PredictorError) -> Response:
        status = status_of(error)
        if status >= 500:
            log.error("%s failed: %s", request.url.path, error)
        protocol = "v1" if request.url.path.startswith("/v1/") else "v2"
        if model.metrics is not None:
            model.metrics.requests(protocol, status).inc()
        return Response(error_body(str(error)), status_code=status, media_type="application/json")

    return handle


async def _validation_error_handler(request: Request, error: RequestValidationError) -> Response:
    problems = "; ".join(
        f"'{'.'.join(str(part) for part in e.get('loc', ())[1:]) or 'body'}': {e.get('msg')}" for e in error.errors()
    )
    return Response(error_body(f"invalid request: {problems}"), status_code=400, media_type="application/json")


class FlywheelModelServer(ModelServer):
    def __init__(self, settings: Settings) -> None:
        super().__init__(
            http_port=settings.http_port,
            workers=settings.workers,
            enable_grpc=False,
            enable_docs_url=False,
            enable_latency_logging=False,
            grace_period=GRACE_PERIOD_SECONDS,
        )
        self.settings = settings
        self.dataplane = FlywheelDataPlane(model_registry=self.registered_models)

    def start(self, models: list[OnnxModel]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        rest = FlywheelRESTServer(self.settings, self.dataplane, self.model_repository_extension)
        if self.workers > 1:
            server = RESTServerMultiProcess(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                workers=self.workers,
                grace_period=self.grace_period,
            )
            server._rest_server = rest
            self._rest_multiprocess_server = server
            self.servers.append(server.start())
        else:
            self._rest_server = rest
            self.servers.append(rest.start())
        self.register_signal_handler()
        _run(self._serve())


def _run(main: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def serve(settings: Settings) -> None:
    """Load the configured model (refusing a bad one with ModelLoadError) and serve until signalled."""
    model = OnnxModel(settings)
    model.load()
    log.info(model.describe())
    FlywheelModelServer(settings).start([model])
