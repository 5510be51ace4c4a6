"""Prometheus metrics of the transformer, served by KServe's `/metrics` on the HTTP port.

Labels stay bounded: `model`, `version` (published versions), `feature` (the fixed online features),
`entity` (card, merchant), `field` (the raw fields flywheel_core.schema records a training domain for).
Every failure mode a dashboard or the rollout controller needs has its own counter, so no label carries
free text.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PREFIX = "flywheel_transformer_"


class Metrics:
    """All metrics of one transformer process; tests pass their own registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ("model",)) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=registry)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(PREFIX + name, doc, ("model",), buckets=LATENCY_BUCKETS, registry=registry)

        self.requests = counter("requests_total", "Predict requests received.")
        self.invalid_requests = counter("invalid_requests_total", "Predict requests refused with a 4xx.")
        self.failed_requests = counter(
            "failed_requests_total", "Predict requests answered 5xx (feature service, predictor or model not loaded)."
        )
        self.predictions = counter("predictions_total", "Transactions scored.", ("model", "version"))
        self.declines = counter("declines_total", "Transactions declined.", ("model", "version"))
        self.missing_features = counter(
            "missing_features_total",
            "Online feature values the feature service did not have (training default used).",
            ("model", "feature"),
        )
        self.unknown_entities = counter(
            "unknown_entities_total",
            "Transactions whose card or merchant the online store has no row for (all its features defaulted).",
            ("model", "entity"),
        )
        self.unseen_values = counter(
            "unseen_values_total",
            "Transactions with a value the model never saw in training, by field (scored, flagged `unseen`).",
            ("model", "field"),
        )
        self.feature_lookup_failures = counter(
            "feature_lookup_failures_total", "Online feature lookups that failed (timeouts included)."
        )
        self.feature_lookup_timeouts = counter(
            "feature_lookup_timeouts_total", "Online feature lookups that timed out."
        )
        self.feature_fallbacks = counter(
            "feature_fallbacks_total",
            "Transactions scored with training defaults because the feature lookup failed (degraded).",
        )
        self.predictor_errors = counter("predictor_errors_total", "Predictor calls that failed.")
        self.events_submitted = counter(
            "events_submitted_total",
            "Inference CloudEvents produced (two per scored request); each ends sent, failed, dropped or unsent.",
        )
        self.events_sent = counter("events_sent_total", "Inference CloudEvents accepted by the sink.")
        self.events_dropped = counter(
            "events_dropped_total", "Inference CloudEvents dropped: the record was scored while the queue was full."
        )
        self.events_failed = counter(
            "events_failed_total",
            "Inference CloudEvents given up on: refused for good (4xx), or their record not taken within its "
            "EVENT_RETRY_S budget (both events).",
        )
        self.events_retried = counter(
            "events_retried_total", "Posts of inference CloudEvents tried again after a transient failure."
        )
        self.events_unsent = counter(
            "events_unsent_total",
            "Inference CloudEvents still queued or in flight when the shutdown drain deadline passed (never sent).",
        )
        self.event_queue = Gauge(
            PREFIX + "event_queue_records", "Inference records waiting for the sink.", ("model",), registry=registry
        )
        self.request_seconds = histogram("request_seconds", "Predict request latency inside the transformer.")
        self.feature_lookup_seconds = histogram("feature_lookup_seconds", "Online feature lookup latency.")
        self.predictor_seconds = histogram("predictor_seconds", "Predictor V2 call latency.")
        self.model_info = Gauge(
            PREFIX + "model_info",
            "1 for the model version whose metadata is loaded.",
            ("model", "version"),
            registry=registry,
        )
