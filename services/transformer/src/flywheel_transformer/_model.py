"""The KServe transformer model: raw transactions -> features -> predictor (V2) -> decisions.

KServe's `Model.__call__` runs preprocess -> predict -> postprocess; this class fills them in:

- preprocess: pick the model version's spec (the one loaded at start, or the one the request names in
  `x-flywheel-model-version`, from the spec cache), validate the V1 body, look up online features for
  the whole batch in one call, add the on-demand features, vectorise (flywheel_core, as in training);
- predict: one V2 call to the predictor with the FP32 batch, versioned when the request named a version;
- postprocess: threshold the scores (configuration, not model), build the V1 body and the response
  headers (`_headers`), queue the inference record for the CloudEvent sink and the transactions for the
  features service's stream step (`_stream`), both off the request path.

Readiness is the default version's metadata being loaded (`use`), never a disk read per request.

`GET /v2/models/<m>` (`describe`) says what this is: a transformer (`PLATFORM`, with the predictor's
platform named) taking raw transactions and answering decisions, and the versions a request may name,
the default one first.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from kserve import Model
from kserve import errors as kserve_errors
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferRequest

from flywheel_contracts.auth import Check, TokenFile, unauthorized_body

from ._config import Settings
from ._errors import (
    FeaturesUnavailable,
    InternalFailure,
    ModelNotLoaded,
    RequestError,
    Unauthorized,
    UnsupportedProtocol,
    status_of,
)
from ._events import EventSink, InferenceRecord
from ._features import FeatureClient
from ._headers import DEBUG_FEATURES_HEADER, answer_headers, debug_features_requested, is_version, requested_version
from ._metrics import Metrics
from ._policy import Limits, check_possible, unseen_fields
from ._predictor import PredictorClient, Scores, infer_body
from ._repo import SpecCache
from ._scoring import ONLINE_FEATURES, Assembled, OnlineLookup, assemble, decide, named_features
from ._spec import ModelSpec
from ._stream import FeatureStream
from ._validation import REQUIRED_FIELDS, Transaction, decode_body, parse_instances

log = logging.getLogger("flywheel_transformer")

T = TypeVar("T")

_KSERVE_ERRORS = (
    kserve_errors.InferenceError,
    kserve_errors.InvalidInput,
    kserve_errors.ModelNotFound,
    kserve_errors.ModelNotReady,
    kserve_errors.NoModelReady,
    kserve_errors.ServerNotReady,
    kserve_errors.UnsupportedProtocol,
)

PLATFORM = "flywheel-transformer"
"""The V2 metadata `platform` of this service; the predictor's platform follows in parentheses when known."""


@dataclass(frozen=True)
class _Prepared:
    inference_id: str
    received_at: datetime
    spec: ModelSpec
    version: str | None
    """The version the request named (its spec is `spec`), or None for the version loaded at start."""
    transactions: list[Transaction]
    assembled: Assembled
    debug: bool
    unseen: list[list[str]]
    """Per instance, the fields whose value the model never saw in training (sorted; see _policy)."""


@dataclass(frozen=True)
class _Scored:
    prepared: _Prepared
    request: dict[str, Any]
    scores: Scores


class FraudTransformer(Model):
    """The `fraud` transformer hosted by kserve.ModelServer."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        features: FeatureClient,
        predictor: PredictorClient,
        events: EventSink | None = None,
        specs: SpecCache | None = None,
        stream: FeatureStream | None = None,
    ) -> None:
        super().__init__(settings.model_name, return_response_headers=True)
        self.settings = settings
        self.metrics = metrics
        self.features = features
        self.predictor = predictor
        self.events = events
        self.stream = stream
        """Where scored transactions go so their cards' online features move (None: FEATURE_STREAM_URL unset)."""
        self.specs = specs or SpecCache(settings.model_repo, settings.model_name, settings.model_poll_interval_s)
        self.spec: ModelSpec | None = None
        self.ready = False
        self.limits = Limits(
            max_amount=settings.max_amount,
            max_future_skew=timedelta(seconds=settings.max_future_skew_s),
            max_event_age=timedelta(seconds=settings.max_event_age_s),
        )
        self.debug_token = (
            TokenFile(settings.debug_token_file, name="transformer debug token") if settings.debug_features else None
        )
        """Who may have `x-flywheel-debug-features` answered; None when DEBUG_FEATURES is off (header ignored)."""

    def use(self, spec: ModelSpec) -> None:
        """Serve with this model version's metadata; the transformer is ready from now on."""
        undefaulted = [name for name in ONLINE_FEATURES if name not in spec.defaults]
        if undefaulted:
            log.warning(
                "model %s %s has no training default for %s; 0.0 stands in", spec.model, spec.version, undefaulted
            )
        self.spec = spec
        self.specs.put(spec)  # a request naming the default version needs no second load
        self.metrics.model_info.labels(self.name, spec.version).set(1)
        self.ready = True

    def load(self) -> bool:
        # KServe calls load() on a request while not ready: stay cheap, the SpecWatcher does the loading.
        return self.ready

    def start(self) -> None:
        # The base class marks the model ready here; readiness must mean "metadata loaded".
        pass

    def stop(self) -> None:
        self.ready = False

    async def close(self) -> None:
        """At shutdown, once no request is in flight: drain the inference log within EVENT_DRAIN_TIMEOUT_S,
        close the feature, predictor and event clients, and log in one line what could not be sent."""
        try:
            if self.events is None:
                log.info("shutdown: inference logging off, nothing to drain")
                return
            deadline = self.settings.event_drain_timeout_s
            report = await self.events.close(deadline)
            log.log(
                logging.WARNING if report.unsent else logging.INFO,
                "shutdown: inference log drained in %.1f s: %d events sent, %d failed, %d events could not be sent "
                "(queued or in flight at the %g s deadline, FLYWHEEL_TRANSFORMER_EVENT_DRAIN_TIMEOUT_S; counted in "
                "flywheel_transformer_events_unsent_total)",
                report.seconds,
                report.sent,
                report.failed,
                report.unsent,
                deadline,
            )
        finally:
            if self.stream is not None:  # the same deadline again: Kubernetes' grace period must cover both
                unsent = await self.stream.close(self.settings.event_drain_timeout_s)
                if unsent:
                    log.warning("shutdown: %d scored transactions not streamed to the features service (counted in "
                                "flywheel_transformer_feature_stream_unsent_total)", unsent)
            await self.features.aclose()
            await self.predictor.aclose()

    def count_undecodable(self) -> None:
        """Count a predict request whose body KServe's JSON decoder refused (it never reaches `__call__`)."""
        self.metrics.requests.labels(self.name).inc()
        self.metrics.invalid_requests.labels(self.name).inc()

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": f, "datatype": "FP64" if f == "amount" else "BYTES", "shape": [-1]} for f in REQUIRED_FIELDS]

    def get_output_types(self) -> list[dict[str, Any]]:
        # One entry per field of a prediction record; [-1, -1] is a list per instance, BYTES a string (or,
        # for missing_reasons, a JSON object per instance).
        return [
            {"name": "id", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "decision", "datatype": "BYTES", "shape": [-1]},
            {"name": "threshold", "datatype": "FP64", "shape": [-1]},
            {"name": "model_version", "datatype": "BYTES", "shape": [-1]},
            {"name": "missing_features", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "missing_reasons", "datatype": "BYTES", "shape": [-1]},
            {"name": "unknown_entities", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "degraded", "datatype": "BOOL", "shape": [-1]},
            {"name": "unseen", "datatype": "BYTES", "shape": [-1, -1]},
        ]

    async def describe(self) -> dict[str, Any]:
        """The V2 model metadata fields KServe leaves out (`versions`, `platform`); KServe adds the rest."""
        spec = self.spec
        default = [spec.version] if spec is not None else []
        others = [v for v in await self.specs.servable() if v not in default]
        predictor = spec.predictor_platform if spec is not None else ""
        return {
            "versions": default + others,
            "platform": f"{PLATFORM} (predictor: {predictor})" if predictor else PLATFORM,
        }

    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> Any:
        """KServe's route into the model (FLYWHEEL_TRANSFORMER_FAST_PATH=false, CloudEvents, other content types)."""
        return await self._counted(super().__call__(body, headers, verb))

    async def score(self, body: Any, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """The fast path's route into the model (_fastpath): the V1 body as decoded JSON and the request headers
        (lower-case names) in, the V1 answer and its response headers out. What KServe's `Model.__call__` runs
        (preprocess, predict, postprocess), counted and timed the same way, without KServe's own histograms."""
        return await self._counted(self._score(body, headers))

    async def _score(self, body: Any, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        response_headers: dict[str, str] = {}
        prepared = await self.preprocess(body, headers)
        scored = await self.predict(prepared, headers, response_headers)
        return await self.postprocess(scored, headers, response_headers), response_headers

    async def _counted(self, call: Awaitable[T]) -> T:
        """`call`, counted in the request metrics and timed; a bug becomes InternalFailure, logged once."""
        labels = self.metrics.requests.labels(self.name)
        labels.inc()
        started = time.perf_counter()
        try:
            return await call
        except RequestError as e:
            counter = self.metrics.invalid_requests if status_of(e) < 500 else self.metrics.failed_requests
            counter.labels(self.name).inc()
            raise
        except _KSERVE_ERRORS:
            raise  # KServe's own (bad input, not ready): its handlers answer them
        except Exception as e:
            # A bug: logged here once, answered 500 with a generic body. Left to KServe, the answer would
            # carry the exception's text and the traceback be logged twice (KServe's handler, then uvicorn).
            self.metrics.failed_requests.labels(self.name).inc()
            log.exception("%s: request failed unexpectedly", self.name)
            raise InternalFailure() from e
        finally:
            self.metrics.request_seconds.labels(self.name).observe(time.perf_counter() - started)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> _Prepared:
        headers = headers or {}
        if isinstance(payload, InferRequest):
            raise UnsupportedProtocol(
                f"the transformer takes raw transactions over KServe V1 only: POST "
                f'/v1/models/{self.name}:predict with {{"instances": [transaction, ...]}}; the predictor '
                "serves V2 tensors"
            )
        debug = self._debug_features(headers)
        version = requested_version(headers)
        spec = self.spec
        if spec is None:
            raise ModelNotLoaded(f"model {self.name} has no published metadata yet: train and publish a version")
        if version is not None:
            spec = await self.specs.get(version)
        received_at = datetime.now(timezone.utc)
        transactions = parse_instances(decode_body(payload, headers.get("content-type")), self.settings.max_instances)
        check_possible(transactions, self.limits, received_at)
        unseen = [unseen_fields(t, spec.seen, self.settings.unseen_amount_margin) for t in transactions]
        online = await self._lookup(transactions)
        assembled = assemble(transactions, online, spec.defaults)
        if not assembled.degraded:
            for missing in assembled.missing:
                for name in missing:
                    self.metrics.missing_features.labels(self.name, name).inc()
            for entities in assembled.unknown_entities:
                for entity in entities:
                    self.metrics.unknown_entities.labels(self.name, entity).inc()
        return _Prepared(str(uuid.uuid4()), received_at, spec, version, transactions, assembled, debug, unseen)

    def _debug_features(self, headers: dict[str, str]) -> bool:
        """Whether to return the model input: never while DEBUG_FEATURES is off (the header is ignored); when on,
        a request that asks must carry the debug token (401 otherwise, before any lookup is made)."""
        if self.debug_token is None or not debug_features_requested(headers):
            return False
        result = self.debug_token.check(headers)
        if result is not Check.OK:
            message = unauthorized_body(result, self.debug_token, "FLYWHEEL_TRANSFORMER_DEBUG_TOKEN_FILE")["error"]
            raise Unauthorized(f"{DEBUG_FEATURES_HEADER} needs the transformer debug token: {message}")
        return True

    async def _lookup(self, transactions: list[Transaction]) -> OnlineLookup | None:
        started = time.perf_counter()
        try:
            return await self.features.lookup(transactions)
        except FeaturesUnavailable as e:
            self.metrics.feature_lookup_failures.labels(self.name).inc()
            if e.reason == "timeout":
                self.metrics.feature_lookup_timeouts.labels(self.name).inc()
            if self.settings.features_fallback != "defaults":
                raise
            self.metrics.feature_fallbacks.labels(self.name).inc(len(transactions))
            return None
        finally:
            self.metrics.feature_lookup_seconds.labels(self.name).observe(time.perf_counter() - started)

    def validate(self, payload: Any) -> Any:
        # The payload is this class's own, already validated; KServe's dict checks do not apply.
        return payload

    async def predict(
        self, payload: _Prepared, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> _Scored:
        spec = payload.spec
        request = infer_body(payload.inference_id, spec.input_name, payload.assembled.vectors)
        started = time.perf_counter()
        try:
            scores = await self.predictor.infer(
                request, spec.output_name, len(payload.transactions), version=payload.version
            )
        except RequestError:
            self.metrics.predictor_errors.labels(self.name).inc()
            raise
        finally:
            self.metrics.predictor_seconds.labels(self.name).observe(time.perf_counter() - started)
        return _Scored(payload, request, scores)

    async def postprocess(
        self, result: _Scored, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        prepared, scores = result.prepared, result.scores
        threshold = self.settings.threshold
        version = scores.model_version
        decisions = [decide(p, threshold) for p in scores.probabilities]
        predictions = []
        for i, transaction in enumerate(prepared.transactions):
            prediction: dict[str, Any] = {
                "id": transaction.transaction_id,
                "score": scores.probabilities[i],
                "decision": decisions[i],
                "threshold": threshold,
                "model_version": version,
                "missing_features": prepared.assembled.missing[i],
                "missing_reasons": prepared.assembled.reasons[i],
                "unknown_entities": prepared.assembled.unknown_entities[i],
                "degraded": prepared.assembled.degraded,
                "unseen": prepared.unseen[i],
            }
            if prepared.debug:
                prediction["features"] = named_features(prepared.spec.column_names, prepared.assembled.vectors[i])
            predictions.append(prediction)
        # Only a well-formed vN becomes a label: a named version was checked against the repository and the
        # predictor's answer against it; a free-form string from a predictor must not mint label values.
        version_label = version if is_version(version) else "unknown"
        self.metrics.predictions.labels(self.name, version_label).inc(len(predictions))
        self.metrics.declines.labels(self.name, version_label).inc(decisions.count("decline"))
        for fields in prepared.unseen:  # counted once scored: a refused or failed request flags nothing
            for field in fields:
                self.metrics.unseen_values.labels(self.name, field).inc()
        if response_headers is not None:
            response_headers.update(answer_headers(prepared.inference_id, version, scores.probabilities, decisions))
        if self.events is not None:
            self.events.submit(self._record(result, decisions))
        if self.stream is not None:
            self.stream.submit(prepared.transactions)
        return {"predictions": predictions, "inference_id": prepared.inference_id}

    def _record(self, result: _Scored, decisions: list[str]) -> InferenceRecord:
        prepared, scores = result.prepared, result.scores
        n = len(prepared.transactions)
        ids = {
            "name": "transaction_id",
            "shape": [n],
            "datatype": "BYTES",
            "data": [t.transaction_id for t in prepared.transactions],
        }
        request = {
            **result.request,
            "inputs": [*result.request["inputs"], ids],
            "parameters": {"degraded": prepared.assembled.degraded, "metadata_version": prepared.spec.version},
        }
        response = {
            "model_name": scores.model_name or self.name,
            "model_version": scores.model_version,
            "id": prepared.inference_id,
            "parameters": {"threshold": self.settings.threshold},
            "outputs": [
                {"name": prepared.spec.output_name, "shape": [n, 1], "datatype": "FP32", "data": scores.probabilities},
                {"name": "decision", "shape": [n], "datatype": "BYTES", "data": decisions},
                # V2 has no ragged tensors: each instance's unseen fields, comma-joined ("" when none).
                {"name": "unseen", "shape": [n], "datatype": "BYTES", "data": [",".join(u) for u in prepared.unseen]},
                ids,
            ],
        }
        version = scores.model_version if is_version(scores.model_version) else None
        return InferenceRecord(prepared.inference_id, prepared.received_at, request, response, version)
