"""The transformer's settings: environment variables `FLYWHEEL_TRANSFORMER_*`, read once at start-up.

A bad value stops the process before it listens, with a message that names the variable, the value and
what was expected, so a typo in a manifest fails the rollout instead of serving with a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AnyHttpUrl, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel_contracts.admission import AdmissionSettings
from flywheel_core.settings import describe_setting_errors

from ._errors import ConfigError

ENV_PREFIX = "FLYWHEEL_TRANSFORMER_"


# Admission control (MAX_IN_FLIGHT, MAX_WAITING, MAX_WAIT_MS, RETRY_AFTER_S, SHED_EXEMPT_PATHS): a request costs this
# service about 10 ms of CPU (docs/benchmarks.md), so 8 in flight is ~80 ms of work queued behind the newest; past 8
# in flight and 8 waiting (for at most 50 ms) a request is answered 503 overloaded + Retry-After at once.
if TYPE_CHECKING:  # mypy cannot follow a class built at run time; its fields are AdmissionSettings'
    _Admission = AdmissionSettings
else:
    _Admission = AdmissionSettings.with_defaults(max_in_flight=8, max_waiting=8, max_wait_ms=50.0)


class Settings(BaseSettings, _Admission):
    """Every knob of the transformer; see each field for its unit, default and why."""

    # `model_*` fields name the served model, not pydantic internals.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, protected_namespaces=())

    http_host: str = Field("0.0.0.0", min_length=1)
    """Address to listen on. Default 0.0.0.0 so a pod is reachable; `make up` sets 127.0.0.1 (loopback only)."""

    http_port: int = Field(8090, ge=1, le=65535)
    """HTTP port (default 8090, the port `make up` and the chart give the transformer)."""

    model_name: str = Field("fraud", min_length=1, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    """Model name (default `fraud`): the V1/V2 path segment, the predictor's model and the repo folder."""

    predictor_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8080")
    """Base URL of the predictor (default http://127.0.0.1:8080); called over V2 `/v2/models/<model>/infer`,
    or `/v2/models/<model>/versions/<version>/infer` for a request that names a version."""

    features_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:6566")
    """Base URL of the Feast feature server (default http://127.0.0.1:6566, Feast's own default port)."""

    model_repo: Path = Path("./model_repo")
    """Model repository root (default ./model_repo); only `metadata.json` is used here (columns, defaults)."""

    model_version: str = Field("latest", pattern=r"^(latest|v\d+)$")
    """Version whose metadata is used (default `latest` = highest published vN at start-up)."""

    model_poll_interval_s: float = Field(5.0, gt=0, le=300)
    """Seconds between looks at the repo (default 5): while no version is published yet (ready stays false),
    and how long a request-named version's "not published" or "cannot be used" answer is remembered
    before the repo is read again (so such requests never read the disk each)."""

    features_timeout_s: float = Field(0.5, gt=0, le=30)
    """Timeout in seconds of one online-feature lookup (default 0.5): a fraud decision is inline with a
    card payment, so a slow store must fail fast rather than hold the payment."""

    predictor_timeout_s: float = Field(1.0, gt=0, le=60)
    """Timeout in seconds of one predictor call (default 1.0)."""

    threshold: float = Field(0.5, ge=0.0, le=1.0)
    """Decision threshold on the calibrated probability (default 0.5): score >= threshold declines. It is
    configuration, never part of the model, so the business can move it without retraining."""

    features_fallback: Literal["error", "defaults"] = "error"
    """What to do when the feature server is down or slow (default `error`): `error` answers 503;
    `defaults` scores with the training defaults and marks each prediction `degraded: true`."""

    max_instances: int = Field(1000, ge=1, le=100_000)
    """Most transactions in one request (default 1000); more gets a 413, bounding memory and latency."""

    fast_path: bool = True
    """Whether `POST /v1/models/<m>:predict` is answered by a small ASGI handler in front of KServe's app
    (_fastpath: same contract, errors and metrics, a fraction of the per-request CPU) (default true). False sends
    every request through KServe's own handlers, to compare the two or to rule the fast path out."""

    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    """Largest request body in bytes (default 1 MiB); a larger one gets a 413 before any of it is parsed
    (Content-Length over the limit is refused unread, a chunked body as soon as it grows past it). A raw
    transaction is about 250 bytes of JSON (300 with the simulator's extra fields), so 1 MiB holds
    MAX_INSTANCES=1000 of them with 3x room for longer ids, while parsing never holds more than 1 MiB."""

    max_amount: float = Field(10_000_000.0, gt=0, le=1e12)
    """Largest `amount` a transaction may carry, in its own currency's units (default 10,000,000); above it the
    request is a 422 naming the field, not scored. No card authorization is that large in any currency the
    network carries; such a value is a bug upstream (minor units sent as major, a test value). At most 1e12,
    so every amount-derived model input stays a finite FP32 number."""

    max_future_skew_s: float = Field(300.0, ge=0, le=30 * 86_400)
    """Seconds an `event_timestamp` may lie ahead of this server's clock (default 300: clock skew between the
    card network and here); further ahead is a 422 naming the field. A stack that replays simulated traffic
    stamped ahead of the wall clock raises it (at most 30 days)."""

    max_event_age_s: float = Field(366 * 86_400.0, gt=0, le=100 * 366 * 86_400)
    """Seconds an `event_timestamp` may lie behind this server's clock (default 31,622,400 = 366 days); older
    is a 422 naming the field. A transaction scored a year after it happened is a broken stamp (epoch zero,
    year 1), not a late authorization; replays of recent history stay within it."""

    unseen_amount_margin: float = Field(0.1, ge=0, le=100)
    """How far outside the training range an `amount` must lie to be flagged `unseen` (default 0.1 = 10%):
    below min / (1 + margin) or above max * (1 + margin), the range being the model version's metadata
    `training_domain.ranges.amount`. Multiplicative, because amounts spread over orders of magnitude."""

    debug_features: bool = False
    """Whether the `x-flywheel-debug-features` header may return each prediction's model input (default
    false: the header is ignored). On, only a request with `Authorization: Bearer <debug token>` gets the
    features; one that sends the header without that token gets a 401. The features are the model's
    inputs for a customer's transaction, not for every caller."""

    debug_token_file: Path | None = None
    """File holding the transformer debug token (default unset = nobody gets features, even with
    DEBUG_FEATURES on). Re-read when it changes, so a rotated Secret needs no restart."""

    features_token_file: Path | None = None
    """File holding the features read token sent as `Authorization: Bearer` to the feature service (default
    unset = no header). Re-read when it changes; a 401 from the feature service is a 503 naming it."""

    event_token_file: Path | None = None
    """File holding the drift ingest token sent as `Authorization: Bearer` with every CloudEvent (default
    unset = no header). Re-read when it changes; a 401 from the sink is counted as a failed send."""

    event_sink_url: str = ""
    """Where inference CloudEvents are posted (default empty = inference logging off)."""

    event_queue_size: int = Field(1000, ge=1, le=1_000_000)
    """Inference records (request + response event pairs) that may wait for the sink (default 1000);
    when full, new records are dropped and counted, so a slow sink never slows scoring."""

    event_timeout_s: float = Field(1.0, gt=0, le=30)
    """Timeout in seconds of one post to the event sink (default 1.0)."""

    event_retry_s: float = Field(30.0, ge=0, le=3600)
    """Seconds a record (its request and response event together) is retried after a transient failure (no answer,
    a timeout, 408, 429, 5xx), from when a sender takes it, before both events are given up and counted in
    `events_failed_total` (default 30: longer than a drift pod takes to restart). Back-off from 0.1 s doubling to
    2 s. Delivery is at least once: the drift service drops a second copy by `ce-id`. While the sink is down the
    other records wait in the queue (EVENT_QUEUE_SIZE); once it is full new records are dropped, counted in
    `events_dropped_total` (README, *Inference log*). 0 turns retries off. A 4xx other than 408/429 is never
    retried."""

    event_drain_timeout_s: float = Field(5.0, gt=0, le=300)
    """Most seconds spent at shutdown (SIGTERM) posting the inference records still queued (default 5); what
    is left after it is counted in `events_unsent_total` and logged, not sent. Keep it, plus the few seconds
    in-flight requests take (FEATURES_TIMEOUT_S + PREDICTOR_TIMEOUT_S), below the pod's
    terminationGracePeriodSeconds (the chart leaves Kubernetes' 30 s), or the kill comes first."""

    event_senders: int = Field(2, ge=1, le=64)
    """Concurrent sender tasks draining the event queue (default 2)."""

    event_mode: Literal["batch", "binary"] = "batch"
    """How events are posted (default `batch`): `batch` posts what is queued, both events of up to EVENT_BATCH_MAX
    records, as one CloudEvents batch-mode request (`application/cloudevents-batch+json`, structured-mode events),
    which the drift service reads; `binary` posts each event alone in binary mode with KServe logger's headers
    (two requests per scored request), for sinks that read only that: KServe's own logger sinks and most other
    receivers."""

    event_batch_max: int = Field(64, ge=1, le=10_000)
    """Most records (request + response event pairs) in one batch-mode post (default 64, about 60 KB for
    single-transaction requests; the drift service takes 16 MiB). A sender takes what is queued, up to this,
    without waiting for more. A batch the sink refuses as too large (413) is split in halves and each is sent."""

    event_batch_linger_s: float = Field(0.2, ge=0, le=5)
    """Seconds a batch-mode sender that holds fewer than EVENT_BATCH_MAX records waits for more before posting
    (default 0.2; 0: only what is queued). The inference log is off the request path, so this delays only what
    the drift service sees, never an answer; it makes batches of about 5 at 25 requests a second instead of one,
    and each batch pays the drift service's per-request cost once. At shutdown it adds at most this to the drain."""

    event_source: str = Field("urn:flywheel:transformer", min_length=1)
    """CloudEvent `source` (default urn:flywheel:transformer)."""

    event_namespace: str = "default"
    """`ce-namespace` extension (default `default`): the Kubernetes namespace in a cluster."""

    event_inference_service: str = Field("fraud", min_length=1)
    """`ce-inferenceservicename` extension (default `fraud`): the InferenceService name in a cluster."""

    event_endpoint: str = "default"
    """`ce-endpoint` extension (default `default`; KServe uses `default` or `canary`)."""

    lean_http: bool = True
    """Call the feature server, the predictor, the drift service and the stream step through the lean HTTP/1.1
    transport (_transport.py: one write per request, a C parser; about 40 % of this service's CPU went to httpx's
    own transport). false: httpx's own transport, for comparison or should a peer need what the lean one lacks
    (HTTP/2, proxies)."""

    feature_stream_url: str = ""
    """Base URL of the features service whose stream step (`POST /stream/transactions`) gets every scored
    transaction, so the card's online features move with live traffic (default empty = off; the local stack
    sets it to FEATURES_URL). Off the request path: a full queue or a failed post is counted, never felt."""

    feature_stream_token_file: Path | None = None
    """File holding the features write token sent with each stream post (default unset = no header, and the
    features service answers 401, counted in `feature_stream_failed_total`). Re-read when it changes."""

    feature_stream_queue_size: int = Field(10_000, ge=1, le=1_000_000)
    """Scored transactions that may wait for the stream step (default 10,000, about a minute of peak traffic);
    when full, new ones are dropped and counted, so a slow features service never slows scoring."""

    feature_stream_timeout_s: float = Field(2.0, gt=0, le=30)
    """Timeout in seconds of one stream post (default 2.0; a post carries up to 200 transactions); a failed post
    is counted, not retried."""

    feature_stream_linger_s: float = Field(0.1, ge=0, le=1)
    """Seconds the stream's sender waits for more scored transactions before posting what it holds (default 0.1;
    0: only what is queued). It bounds the staleness it adds: a scored transaction is in its card's online
    features within this and one post. At 50 requests a second it makes posts of ~5 transactions instead of one,
    and each post costs the transformer and the stream step about the same whatever it carries."""

    @field_validator("feature_stream_token_file", mode="before")
    @classmethod
    def _empty_stream_token_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("feature_stream_url")
    @classmethod
    def _stream_is_http(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL, or empty to turn the feature stream off")
        return value

    @field_validator("debug_token_file", "features_token_file", "event_token_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("event_sink_url")
    @classmethod
    def _sink_is_http(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL, or empty to turn inference logging off")
        return value

    @property
    def predictor_base(self) -> str:
        return str(self.predictor_url).rstrip("/")

    @property
    def features_base(self) -> str:
        return str(self.features_url).rstrip("/")


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment (overrides win); raises ConfigError naming the bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(describe_setting_errors(e.errors(), ENV_PREFIX)) from e
