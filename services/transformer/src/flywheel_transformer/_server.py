"""Wiring: settings -> clients, metrics, event sink, model -> kserve.ModelServer on the HTTP port.

What differs from a stock KServe transformer, each on purpose:

- `/v2/health/ready` (and `/v2/models/<m>/ready`) are true only once the model metadata is loaded;
  stock KServe's server readiness ignores the models. The predictor's health is deliberately *not*
  part of readiness: a predictor blip would otherwise pull every transformer out of its Service, and
  clients would get connection errors instead of this service's own 503 that says what is wrong.
- `GET /v2/models/<m>` names the versions a request may name (the default first) and the platform
  (`flywheel-transformer (predictor: onnxruntime_onnx)`); KServe's answers `versions: null, platform: ""`.
- The transformer's error family is answered from one table (`_errors.STATUS`) as JSON, not logged.
- No log line per request: KServe's latency lines and uvicorn's access log are turned down, and
  KServe's traceback for a client's malformed JSON is filtered out. Metrics carry the per-request story.
- Only inference, health, metadata and metrics routes are registered (see _routes): not KServe's model
  repository extension, whose unload would let any caller take the model out of service, nor
  `:explain`, `/openapi.json` or `/docs`. Anything else is a JSON 404; `GET /v2` lists no extensions.
- Request bodies over MAX_BODY_BYTES are refused before they are parsed (see _limits).
- `POST /v1/models/<m>:predict` is answered by a pure-ASGI layer in front of KServe's app (see _fastpath;
  FLYWHEEL_TRANSFORMER_FAST_PATH=false turns it off): the same answers for a fraction of the CPU. Every
  other route, and any predict it does not cover (CloudEvents, other content types), stays KServe's.
- A served path asked with a method it does not take is a JSON 405 with `Allow`, decided before routing
  (see _methods): KServe's GET `/v1/models/{model_name}` would otherwise take `GET /v1/models/fraud:predict`.
- A body KServe's JSON decoder refuses is a 400 naming the field when a number in it is not representable
  (NaN, Infinity, 1e400; `_TransformerDataPlane.decode`), not KServe's "Unrecognized request format".
- It listens on HTTP_HOST: KServe's ModelServer builds its REST server with 0.0.0.0 hard-coded (0.21),
  so this one builds its own (`_TransformerModelServer.start`; KServe's private names it needs for that
  are in _kserve_adapter).
- It runs on uvloop (`flywheel_contracts.loop`): KServe starts a single process on asyncio's own loop.
- On SIGTERM, once uvicorn has finished the requests in flight, the model drains the inference log for
  at most EVENT_DRAIN_TIMEOUT_S and closes its HTTP clients (`FraudTransformer.close`), then the process
  exits 0.
"""

from __future__ import annotations

import logging
import ssl
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import FastAPIDeprecationWarning, RequestValidationError
from fastapi.responses import JSONResponse, Response
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
from kserve.model_server import app
from kserve.predictor_config import PredictorConfig
from kserve.protocol.dataplane import DataPlane
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.exceptions import HTTPException

from flywheel_contracts.admission import admission
from flywheel_contracts.auth import TokenFile
from flywheel_contracts.errors import code_of_status
from flywheel_contracts.loop import run as run_loop
from flywheel_contracts.tls import TLS
from flywheel_core import model_repo

from ._config import Settings
from ._errors import InvalidRequest, RequestError, VersionRouteNotServed, error_body, status_of
from ._events import EventAttributes, EventSink
from ._fastpath import ASGIApp, FastPath, error_answer
from ._features import FeatureClient
from ._kserve_adapter import (
    ServedRoutesRESTServer,
    check_private_names,
    register_models,
    serve_all,
    served_routes,
)
from ._limits import BodyLimit
from ._methods import MethodCheck
from ._metrics import Metrics
from ._model import FraudTransformer
from ._predictor import PredictorClient
from ._repo import SpecWatcher, load_spec
from ._stream import FeatureStream, StreamMetrics
from ._transport import LeanTransport
from ._validation import explain_undecodable

log = logging.getLogger("flywheel_transformer")

PLAIN = TLS()
"""No TLS settings: plain HTTP served, https peers checked with the system's trust store (tests, local runs)."""


class _TransformerDataPlane(DataPlane):
    """Server readiness = every registered model ready (KServe's own answers true regardless); model metadata
    that says what the transformer serves."""

    def metadata(self) -> dict[str, Any]:
        # KServe lists its model repository extension, whose routes are not served here (see _routes).
        return {**super().metadata(), "extensions": []}

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        metadata = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        if isinstance(model, FraudTransformer):
            metadata.update(await model.describe())
        return metadata

    def decode(self, body: Any, headers: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().decode(body, headers, *args, **kwargs)
        except InvalidInput as e:
            if not isinstance(body, (bytes, bytearray)) or not str(e).startswith("Unrecognized request format"):
                raise
            for model in self.model_registry.get_models().values():
                if isinstance(model, FraudTransformer):
                    model.count_undecodable()
            raise explain_undecodable(bytes(body), str(e).removeprefix("Unrecognized request format: ")) from e

    async def ready(self) -> bool:
        models = self.model_registry.get_models()
        if not models:
            return False
        for name in models:
            if not await self.model_registry.is_model_ready(name):
                return False
        return await super().ready()


class _TransformerRESTServer(ServedRoutesRESTServer):
    """KServe's REST server on HTTP_HOST, with only the served routes (_routes, through _kserve_adapter), JSON
    404s and the body limit in front."""

    def __init__(self, settings: Settings, server: ModelServer, tls: TLS) -> None:
        super().__init__(
            FASTAPI_APP_IMPORT_STRING,
            server.dataplane,
            server.model_repository_extension,
            settings.http_port,
            workers=1,
            grace_period=server.grace_period,
            event_loop=server.event_loop,
            timeout_keep_alive=server.timeout_keep_alive,
        )
        self.settings = settings
        self.config.host = settings.http_host
        for name, value in tls.uvicorn_options().items():  # HTTPS when FLYWHEEL_TLS_CERT_FILE/KEY_FILE are set
            setattr(self.config, name, value)

    def create_application(self) -> None:
        super().create_application()
        app.add_exception_handler(HTTPException, _http_error_handler)
        app.add_exception_handler(NotImplementedError, _not_implemented_handler)
        app.add_exception_handler(RequestValidationError, _validation_error_handler)
        served: ASGIApp = MethodCheck(BodyLimit(app, self.settings.max_body_bytes), served_routes(app))
        model = self.dataplane.model_registry.get_model(self.settings.model_name)
        if self.settings.fast_path and isinstance(model, FraudTransformer):
            served = FastPath(served, model, self.settings.max_body_bytes)
        # Outermost: a request past the admission limit is answered before anything parses it.
        self.config.app = admission(served, self.settings, "transformer")


class _TransformerModelServer(ModelServer):
    """KServe's ModelServer, one process, serving through _TransformerRESTServer (its own start() builds a stock
    RESTServer listening on 0.0.0.0)."""

    def __init__(self, settings: Settings, tls: TLS = PLAIN, **kwargs: Any) -> None:
        check_private_names()
        super().__init__(http_port=settings.http_port, workers=1, **kwargs)
        self.settings = settings
        self.tls = tls
        self.on_shutdown: Callable[[], Awaitable[None]] | None = None
        """Awaited once the HTTP server has stopped (no request in flight): drains and closes the model."""

    def start(self, models: list[Any]) -> None:
        register_models(self, models)
        self.servers.append(_TransformerRESTServer(self.settings, self, self.tls).start())
        self.setup_event_loop()
        self.register_signal_handler()
        run_loop(self._serve_then_shut_down())  # uvloop: kserve would start asyncio's own loop

    async def _serve_then_shut_down(self) -> None:
        try:
            await serve_all(self)
        finally:
            if self.on_shutdown is not None:
                await self.on_shutdown()


async def _request_error_handler(_: Any, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    status, body, headers = error_answer(exc)  # the bytes the fast path answers too
    return Response(body, status_code=status, headers=headers or None, media_type="application/json")


async def _validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own answer to a body KServe's V2 model refuses is a 422 `{"detail": [...]}` that echoes the input
    back; here it is this service's 400 naming the first field."""
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    first = problems[0] if problems else {}
    where = [str(part) for part in first.get("loc", ()) if part not in ("body", "InferenceRequest")]
    message = f"{first.get('msg', 'is invalid')} (not a V2 inference request)"
    error = InvalidRequest(message, field=".".join(where) or None)
    return JSONResponse(status_code=int(status_of(error)), content=error_body(error))


async def _not_implemented_handler(request: Request, exc: Exception) -> JSONResponse:
    """KServe answers its versioned V2 routes with NotImplementedError (a 501, a server error the client cannot
    act on); here they are a 404 naming the way to score with a version. Other NotImplementedErrors keep
    KServe's 501."""
    if "model_version" not in request.path_params:
        return JSONResponse(status_code=501, content={"error": str(exc), "code": code_of_status(501)})
    error = VersionRouteNotServed(
        f"{request.method} {request.url.path}: the transformer has no versioned routes; send "
        "POST /v1/models/fraud:predict with the header x-flywheel-model-version: <version> (versioned V2 routes "
        "are the predictor's)"
    )
    return JSONResponse(status_code=int(status_of(error)), content=error_body(error))


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404 and 405 (no such route, wrong method) in this service's error shape."""
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        body = {
            "error": f"no route {where}: this server answers inference, health, model metadata and /metrics only",
            "code": "not_found",
            "type": "not_found",
        }
    else:
        body = {"error": f"{exc.detail}: {where}", "code": code_of_status(exc.status_code), "type": "http_error"}
    return JSONResponse(status_code=exc.status_code, content=body, headers=exc.headers)


class _DropClientErrorTracebacks(logging.Filter):
    """KServe logs a traceback for every request it rejects; a client's mistake or a not-ready probe is
    not a server fault, and the metrics count them."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady, RequestError))


def _quiet_per_request_logs() -> None:
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kserve").addFilter(_DropClientErrorTracebacks())
    # KServe 0.21's V1 handler returns ORJSONResponse, which this FastAPI deprecates; nothing to act on here.
    warnings.filterwarnings("ignore", category=FastAPIDeprecationWarning)
    ours = logging.getLogger("flywheel_transformer")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False


def build_model(settings: Settings, metrics: Metrics, tls: TLS = PLAIN) -> FraudTransformer:
    """The model and its clients; https peers (features, predictor, drift) are verified with the one context
    made here from FLYWHEEL_TLS_* (the CA file when set, else the system's trust store)."""
    verify = tls.client_context()
    events = None
    if settings.event_sink_url:
        attributes = EventAttributes(
            source=settings.event_source,
            namespace=settings.event_namespace,
            inference_service=settings.event_inference_service,
            endpoint=settings.event_endpoint,
        )
        events = EventSink(
            settings.event_sink_url,
            attributes,
            metrics,
            settings.model_name,
            queue_size=settings.event_queue_size,
            timeout_s=settings.event_timeout_s,
            retry_s=settings.event_retry_s,
            senders=settings.event_senders,
            mode=settings.event_mode,
            batch_max=settings.event_batch_max,
            linger_s=settings.event_batch_linger_s,
            token=TokenFile(settings.event_token_file, name="drift ingest token"),
            transport=lean_transport(settings, verify),
            verify=verify,
        )
    return FraudTransformer(
        settings,
        metrics,
        FeatureClient(
            settings.features_base,
            settings.features_timeout_s,
            token=TokenFile(settings.features_token_file, name="features read token"),
            transport=lean_transport(settings, verify),
            verify=verify,
        ),
        PredictorClient(settings.predictor_base, settings.model_name, settings.predictor_timeout_s,
                        transport=lean_transport(settings, verify), verify=verify),
        events,
        stream=build_stream(settings, verify=verify),
    )


def build_stream(
    settings: Settings, registry: CollectorRegistry = REGISTRY, verify: ssl.SSLContext | bool = True
) -> FeatureStream | None:
    """The client of the features service's stream step, or None when FEATURE_STREAM_URL is unset."""
    if not settings.feature_stream_url:
        return None
    return FeatureStream(
        settings.feature_stream_url,
        StreamMetrics.of(registry),
        settings.model_name,
        queue_size=settings.feature_stream_queue_size,
        timeout_s=settings.feature_stream_timeout_s,
        linger_s=settings.feature_stream_linger_s,
        token=TokenFile(settings.feature_stream_token_file, name="features write token"),
        transport=lean_transport(settings, verify),
        verify=verify,
    )


def lean_transport(settings: Settings, verify: ssl.SSLContext | bool) -> LeanTransport | None:
    """A client's transport: the lean one (_transport) unless LEAN_HTTP is off (None: httpx's own)."""
    return LeanTransport(verify=verify) if settings.lean_http else None


def serve(settings: Settings, tls: TLS = PLAIN) -> None:
    """Run the transformer until SIGTERM/SIGINT (HTTPS when `tls` has a certificate; in kserve mode it has only
    the CA, to verify the services it calls). Raises ModelRepoError/ModelMetadataError for a broken version."""
    server = _TransformerModelServer(
        settings,
        tls,
        enable_grpc=False,  # V1/V2 REST only; KServe's default gRPC port would collide with the predictor's
        enable_latency_logging=False,
        predictor_config=PredictorConfig(
            # Informational for KServe (its own predictor client and health check stay unused).
            predictor_host=settings.predictor_base.split("://", 1)[1],
            predictor_protocol="v2",
            predictor_request_timeout_seconds=max(1, round(settings.predictor_timeout_s)),
        ),
    )
    _quiet_per_request_logs()
    model = build_model(settings, Metrics(), tls)
    try:
        model.use(load_spec(settings.model_repo, settings.model_name, settings.model_version))
        log.info("loaded metadata of model %s %s", model.name, model.spec.version if model.spec else "?")
    except model_repo.VersionNotFound as e:
        log.warning("%s; serving not-ready and looking again every %gs", e, settings.model_poll_interval_s)
        SpecWatcher(
            settings.model_repo,
            settings.model_name,
            settings.model_version,
            settings.model_poll_interval_s,
            model.use,
            known_problem=str(e),
        ).start()
    server.dataplane = _TransformerDataPlane(model_registry=server.registered_models)
    server.register_model(model)
    server.on_shutdown = model.close
    app.add_exception_handler(RequestError, _request_error_handler)
    log.info(
        "transformer %s on %s:%d -> features %s, predictor %s, events %s, threshold %g, fallback %s",
        model.name,
        settings.http_host,
        settings.http_port,
        settings.features_base,
        settings.predictor_base,
        settings.event_sink_url or "off",
        settings.threshold,
        settings.features_fallback,
    )
    if settings.debug_features:
        log.warning(
            "x-flywheel-debug-features is on (FLYWHEEL_TRANSFORMER_DEBUG_FEATURES): requests with the transformer "
            "debug token get their model input back%s",
            "" if model.debug_token and model.debug_token.configured else "; no token is configured, so nobody does",
        )
    # The model was registered above, not passed here: KServe refuses to start without a ready
    # model, and this one becomes ready only when its metadata is published.
    server.start([])
