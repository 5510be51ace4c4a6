"""Prometheus metrics of the hosted versions, labelled by model, version and variant (bounded cardinality:
one series set per loaded version, retired when it is unloaded).

With several workers each process writes its samples to PROMETHEUS_MULTIPROC_DIR (set by __main__
before prometheus_client is imported) and /metrics adds them up, so a scrape sees the whole pod rather
than whichever worker answered. prometheus_client cannot forget a series in that mode: an unloaded
version's counters stay at their last values until the pod restarts, and its model_info drops to 0.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    exposition,
)
from prometheus_client.multiprocess import MultiProcessCollector

# The *_created series double every counter and histogram and nothing here reads them.
disable_created_metrics()

_LABELS = ("model", "version", "variant")
# Single-row inference on a small model takes tens of microseconds to a few milliseconds; the default
# buckets start at 5 ms and would put every request in the first one.
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "flywheel_predictor_requests_total",
    "Inference requests answered, by protocol (v1|v2) and HTTP status code.",
    (*_LABELS, "protocol", "code"),
)
REQUEST_SECONDS = Histogram(
    "flywheel_predictor_request_seconds",
    "Time from reading an inference request to its response, successful requests only.",
    (*_LABELS, "protocol"),
    buckets=_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "flywheel_predictor_inference_seconds",
    "Time inside ONNX Runtime session.run per request.",
    _LABELS,
    buckets=_BUCKETS,
)
ROWS = Counter("flywheel_predictor_rows_total", "Rows scored.", _LABELS)
MODEL_INFO = Gauge(
    "flywheel_predictor_model_info",
    "1 for each model version loaded (with its variant and execution provider).",
    (*_LABELS, "provider"),
    multiprocess_mode="max",
)
LOADED_VERSIONS = Gauge(
    "flywheel_predictor_loaded_versions",
    "Versions of the model loaded (ONNX Runtime sessions), in the worker that holds the most.",
    ("model",),
    multiprocess_mode="max",
)
VERSION_LOADS = Counter(
    "flywheel_predictor_version_loads_total",
    "Version loads and unloads, by outcome: loaded, unloaded, failed.",
    ("model", "outcome"),
)

_MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ


class ModelMetrics:
    """The metric children of one served (model, version, variant), bound once so requests pay no lookup."""

    def __init__(self, model: str, version: str, variant: str, provider: str) -> None:
        self._labels = (model, version, variant)
        self._info = (*self._labels, provider)
        self._requests: dict[tuple[str, int], Counter] = {}
        self.request_seconds = {p: REQUEST_SECONDS.labels(*self._labels, p) for p in ("v1", "v2")}
        self.inference_seconds = INFERENCE_SECONDS.labels(*self._labels)
        self.rows = ROWS.labels(*self._labels)
        MODEL_INFO.labels(*self._info).set(1)

    def retire(self) -> None:
        """This version or variant is no longer served (unloaded, or chosen again after a provider fallback)."""
        if _MULTIPROCESS:  # series cannot be removed from the shared files; "max" over workers still drops to 0
            MODEL_INFO.labels(*self._info).set(0)
            return
        MODEL_INFO.remove(*self._info)
        for protocol, code in self._requests:
            REQUESTS.remove(*self._labels, protocol, str(code))
        for protocol in self.request_seconds:
            REQUEST_SECONDS.remove(*self._labels, protocol)
        INFERENCE_SECONDS.remove(*self._labels)
        ROWS.remove(*self._labels)

    def requests(self, protocol: str, code: int) -> Counter:
        key = (protocol, code)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = REQUESTS.labels(*self._labels, protocol, str(code))
        return child


def render(accept: str | None) -> tuple[bytes, str]:
    """The exposition of every metric in this pod, in the format the scraper asked for."""
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    encoder, content_type = exposition.choose_encoder(accept or "")
    return encoder(registry), content_type
