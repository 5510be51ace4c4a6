"""kserve.ModelServer, tuned: the KServe app with the fast path in front and no per-request logging.

What is changed from a stock `ModelServer().start([model])`, and why:

- The uvicorn app is `FastPath(kserve_app)` (see _fastpath), in every worker process. With
  FLYWHEEL_PREDICTOR_FAST_PATH=false it passes inference through to KServe and keeps only its route
  fixes, for comparison. In front of it, admission control (flywheel_contracts.admission, per worker):
  past MAX_IN_FLIGHT requests and MAX_WAITING waiting, 503 + Retry-After at once rather than a queue.
- uvicorn's access log and KServe's TimingMiddleware are off: each wrote a log line per request,
  and the Prometheus histograms carry the same information. So is uvicorn's X-Forwarded-* handling,
  which only rewrites the client address nothing here reads.
- A single worker runs on uvloop: kserve 0.21 starts it with plain `asyncio.run`, and picks the
  loop (`--event-loop auto`) only for its multi-process server.
- gRPC is not started (port 8081 is not part of the contract; nothing here listens on it).
- Only inference, health, metadata and metrics routes are registered (see _routes): not KServe's
  model repository extension, whose unload would let any caller take the model out of service, nor
  `:explain`, `/openapi.json` or `/docs`. Anything else is 404 with a JSON body, and the server
  metadata (`GET /v2`) lists no extensions.
- Several versions (see _versions): KServe knows one model, the default version. The data plane hands
  an inference request to the version its `x-flywheel-model-version` header names (the fast path
  turns versioned routes into that header) and names the scorer in the same response header; V2
  model metadata reports the loaded versions and the platform, which KServe's leaves out.
- Errors: the predictor's family maps to its status table, and FastAPI's 422 body for a malformed V2
  request (`{"detail": [...]}`) becomes `{"error": ...}` like every other error. KServe's handlers
  for its own client errors (unknown model, bad input, ...) log a traceback per request; the same
  statuses and bodies are kept without the log. Server errors (5xx) are still logged.

With WORKERS > 1 kserve's RESTServerMultiProcess spawns the workers; it builds a plain RESTServer,
which is swapped for ours before start so that each child runs the same app. Every KServe private name
used for this (and for the route filter) is in _kserve_adapter, checked when the server is built.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import FastAPIDeprecationWarning, RequestValidationError
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
from starlette.exceptions import HTTPException
from uvicorn.importer import import_from_string

from flywheel_contracts.admission import admission
from flywheel_contracts.loop import run as run_loop
from flywheel_contracts.tls import TLS

from ._config import Settings
from ._errors import (
    InvalidRequest,
    PredictorError,
    VersionUnavailable,
    error_body,
    message_body,
    status_of,
)
from ._fastpath import FastPath
from ._kserve_adapter import (
    ServedRoutesRESTServer,
    check_private_names,
    register_models,
    serve_all,
    use_multiprocess_server,
)
from ._logging import configure_logging
from ._model import OnnxModel
from ._versions import VERSION_HEADER, VersionSet, requested_version

PLAIN = TLS()
"""No TLS settings: plain HTTP served, https peers checked with the system's trust store (tests, local runs)."""

log = logging.getLogger("flywheel_predictor")

GRACE_PERIOD_SECONDS = 10


class FlywheelDataPlane(DataPlane):
    versions: VersionSet | None = None  # set by FlywheelModelServer.start; travels to workers with the data plane

    def metadata(self) -> dict[str, Any]:
        # KServe lists its model repository extension, whose routes are not served here (see _routes).
        return {**super().metadata(), "extensions": []}

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        metadata = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        if isinstance(model, OnnxModel):
            loaded = self.versions.loaded if self.versions is not None else [model.version]
            metadata.update(versions=loaded, platform="onnxruntime_onnx")
        return metadata

    async def infer(
        self, model_name: str, request: Any, headers: dict[str, str] | None = None
    ) -> tuple[Any, dict[str, str]]:
        """KServe's inference, on the version the request's header names (loaded on demand)."""
        versions = self.versions
        if versions is None or model_name != versions.name:
            return await super().infer(model_name, request, headers)
        model = await versions.get(requested_version((headers or {}).get(VERSION_HEADER)))
        response, response_headers = await model(request, headers=headers)
        return response, {**response_headers, VERSION_HEADER: model.version}


class FlywheelRESTServer(ServedRoutesRESTServer):
    def __init__(self, settings: Settings, dataplane: DataPlane, repository_extension: Any, tls: TLS = PLAIN) -> None:
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
        # HTTPS (and client certificates) when FLYWHEEL_TLS_* say so; the config is loaded in the process that
        # serves (each worker when WORKERS > 1), so every worker wraps its socket in the same context.
        for name, value in tls.uvicorn_options().items():
            setattr(self.config, name, value)

    def create_application(self) -> None:
        configure_logging()  # in a spawned worker, for the first time
        # KServe 0.21's V1 handlers answer with fastapi.responses.ORJSONResponse, which FastAPI 0.165
        # deprecates with a warning in the log on the first V1 request through them. KServe's code, not
        # ours, and harmless until FastAPI removes the class (KServe's pin must move first). Here, not in
        # main: a spawned worker starts with Python's default filters.
        warnings.filterwarnings("ignore", "ORJSONResponse is deprecated", FastAPIDeprecationWarning)
        super().create_application()
        # uvicorn logs each request whenever "uvicorn.access" has a handler, whatever Config.access_log
        # says once logging is configured (kserve configures it, in every worker).
        access = logging.getLogger("uvicorn.access")
        access.handlers.clear()
        access.propagate = False
        app = import_from_string(FASTAPI_APP_IMPORT_STRING)
        versions = self.dataplane.versions
        app.add_exception_handler(PredictorError, _predictor_error_handler(versions))
        app.add_exception_handler(RequestValidationError, _validation_error_handler)
        app.add_exception_handler(HTTPException, _http_error_handler)
        for error_class, status in KSERVE_CLIENT_ERRORS.items():
            app.add_exception_handler(error_class, _quiet_handler(status))
        fast_path = FastPath(app, versions, self.settings.max_body_bytes, serve_inference=self.settings.fast_path)
        self.config.app = admission(fast_path, self.settings, "predictor")


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
        return Response(message_body(str(error), status), status_code=status, media_type="application/json")

    return handle


def _predictor_error_handler(versions: VersionSet):
    async def handle(request: Request, error: PredictorError) -> Response:
        status = status_of(error)
        if status >= 500 and not isinstance(error, VersionUnavailable):  # a failed load was logged when it failed
            log.error("%s failed: %s", request.url.path, error)
        protocol = "v1" if request.url.path.startswith("/v1/") else "v2"
        model = _chosen_version(versions, request.headers.get(VERSION_HEADER))
        headers = None
        if model is not None and model.metrics is not None:
            model.metrics.requests(protocol, status).inc()
            headers = {VERSION_HEADER: model.version}
        return Response(error_body(error), status_code=status, media_type="application/json", headers=headers)

    return handle


def _chosen_version(versions: VersionSet, header: str | None) -> OnnxModel | None:
    """The loaded version a failed request was for; None when it named none that is loaded (its label would
    be the caller's choice, so it gets no series)."""
    try:
        version = requested_version(header)
    except InvalidRequest:
        return None
    return versions.default if version is None else versions.lookup(version)


async def _http_error_handler(request: Request, error: HTTPException) -> Response:
    """Starlette's own 404 and 405 (no such route, wrong method) as `{"error": ...}` like every other error."""
    where = f"{request.method} {request.url.path}"
    if error.status_code == 404:
        message = f"no route {where}: this server answers inference, health, model metadata and /metrics only"
    else:
        message = f"{error.detail}: {where}"
    body = message_body(message, error.status_code)
    return Response(body, status_code=error.status_code, media_type="application/json", headers=error.headers)


async def _validation_error_handler(request: Request, error: RequestValidationError) -> Response:
    problems = "; ".join(
        f"'{'.'.join(str(part) for part in e.get('loc', ())[1:]) or 'body'}': {e.get('msg')}" for e in error.errors()
    )
    return Response(message_body(f"invalid request: {problems}", 400), status_code=400, media_type="application/json")


class FlywheelModelServer(ModelServer):
    """`start([default_model])` serves the default and, through `versions` (built around the default when
    not given), every other version of the model."""

    def __init__(self, settings: Settings, versions: VersionSet | None = None, tls: TLS = PLAIN) -> None:
        check_private_names()
        super().__init__(
            http_port=settings.http_port,
            workers=settings.workers,
            enable_grpc=False,
            enable_docs_url=False,
            enable_latency_logging=False,
            grace_period=GRACE_PERIOD_SECONDS,
        )
        self.settings = settings
        self.versions = versions
        self.tls = tls
        self.dataplane = FlywheelDataPlane(model_registry=self.registered_models)

    def start(self, models: list[OnnxModel]) -> None:
        register_models(self, models)
        self.dataplane.versions = self.versions or VersionSet(self.settings, models[0])
        rest = FlywheelRESTServer(self.settings, self.dataplane, self.model_repository_extension, self.tls)
        if self.workers > 1:
            self.dataplane.versions.hand_over()
            server = RESTServerMultiProcess(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                workers=self.workers,
                grace_period=self.grace_period,
            )
            use_multiprocess_server(self, server, rest)
            self.servers.append(server.start())
        else:
            self.servers.append(rest.start())
        self.register_signal_handler()
        run_loop(serve_all(self))


def serve(settings: Settings, tls: TLS = PLAIN) -> None:
    """Load the default version and those VERSIONS asks for (refusing a bad one with ModelLoadError) and
    serve until signalled (HTTPS when `tls` has a certificate)."""
    model = OnnxModel(settings)
    model.load()
    log.info(model.describe())
    versions = VersionSet(settings, model)
    versions.load_at_start()
    FlywheelModelServer(settings, versions, tls).start([model])
