"""Wiring: settings -> clients, metrics, event sink, model -> kserve.ModelServer on the HTTP port.

Four things differ from a stock KServe transformer, each on purpose:

- `/v2/health/ready` (and `/v2/models/<m>/ready`) are true only once the model metadata is loaded;
  stock KServe's server readiness ignores the models. The predictor's health is deliberately *not*
  part of readiness: a predictor blip would otherwise pull every transformer out of its Service, and
  clients would get connection errors instead of this service's own 503 that says what is wrong.
- `GET /v2/models/<m>` names the versions a request may name (the default first) and the platform
  (`flywheel-transformer (predictor: onnxruntime_onnx)`); KServe's answers `versions: null, platform: ""`.
- The transformer's error family is answered from one table (`_errors.STATUS`) as JSON, not logged.
- No log line per request: KServe's latency lines and uvicorn's access log are turned down, and
  KServe's traceback for a client's malformed JSON is filtered out. Metrics carry the per-request story.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from fastapi.exceptions import FastAPIDeprecationWarning
from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
from kserve.model_server import app
from kserve.predictor_config import PredictorConfig
from kserve.protocol.dataplane import DataPlane

from flywheel_core import model_repo

from ._config import Settings
from ._errors import RequestError, error_body, status_of
from ._events import EventAttributes, EventSink
from ._features import FeatureClient
from ._metrics import Metrics
from ._model import FraudTransformer
from ._predictor import PredictorClient
from ._repo import SpecWatcher, load_spec

log = logging.getLogger("flywheel_transformer")


class _TransformerDataPlane(DataPlane):
    """Server readiness = every registered model ready (KServe's own answers true regardless); model metadata
    that says what the transformer serves."""

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        metadata = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        if isinstance(model, FraudTransformer):
            metadata.update(await model.describe())
        return metadata

    async def ready(self) -> bool:
        models = self.model_registry.get_models()
        if not models:
            return False
        for name in models:
            if not await self.model_registry.is_model_ready(name):
                return False
        return await super().ready()


class _HostModelServer(ModelServer):
    """KServe's ModelServer builds its REST server inside start() with host 0.0.0.0 hard-coded (0.21); this
    sets the configured host on it before uvicorn reads the config (serve() runs after setup_event_loop)."""

    def __init__(self, *, http_host: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.http_host = http_host

    def setup_event_loop(self) -> None:
        rest = getattr(self, "_rest_server", None)
        config = getattr(rest, "config", None)
        if config is None:  # a KServe upgrade moved it: fail at start, never listen on the wrong address
            raise RuntimeError("kserve.ModelServer has no _rest_server.config: cannot set the listen address")
        config.host = self.http_host
        super().setup_event_loop()


async def _request_error_handler(_: Any, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return JSONResponse(status_code=int(status_of(exc)), content=error_body(exc))


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


def build_model(settings: Settings, metrics: Metrics) -> FraudTransformer:
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
            senders=settings.event_senders,
        )
    return FraudTransformer(
        settings,
        metrics,
        FeatureClient(settings.features_base, settings.features_timeout_s),
        PredictorClient(settings.predictor_base, settings.model_name, settings.predictor_timeout_s),
        events,
    )


def serve(settings: Settings) -> None:
    """Run the transformer until SIGTERM/SIGINT. Raises ModelRepoError/ModelMetadataError for a broken version."""
    server = _HostModelServer(
        http_host=settings.http_host,
        http_port=settings.http_port,
        workers=1,
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
    model = build_model(settings, Metrics())
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
    # The model was registered above, not passed here: KServe refuses to start without a ready
    # model, and this one becomes ready only when its metadata is published.
    server.start([])
