"""Prometheus metrics (prefix `flywheel_drift_`). Labels are only model, version and feature: models come
from FLYWHEEL_DRIFT_MODELS, versions from the model repo and features from the version's input columns,
so cardinality is bounded by configuration, never by traffic.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flywheel_contracts.skew import SkewResult

PREFIX = "flywheel_drift_"
MV = ("model", "version")
MVF = ("model", "version", "feature")
FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, labels, registry=r)

        self.events = counter("events_total", "Inference CloudEvents accepted (request and response halves).",
                              ("model",))
        self.batches = counter("batches_total", "Batch requests accepted.", ("model",))
        self.rejected = counter("rejected_requests_total",
                                "Requests refused with a 4xx for a malformed body or headers.")
        self.unauthorized = counter("unauthorized_requests_total",
                                    "Writes refused with 401: no or the wrong credential (or none configured).")
        self.throttled = counter("throttled_requests_total", "Requests refused with 429 because the backlog was full.")
        self.rows = counter("rows_total", "Rows analysed.", MV)
        self.duplicate_events = counter(
            "duplicate_events_total",
            "CloudEvents delivered again (same ce-source, ce-id and ce-type within DEDUP_SECONDS/DEDUP_EVENTS): "
            "acknowledged with 202, not analysed again.")
        self.unseen_inputs = counter(
            "unseen_inputs_total", "Predictions whose transformer flagged this input field as never seen in training "
                                   "(`unseen`); feature is the field name.", MVF)
        self.unpaired = counter("unpaired_events_total", "Request or response halves whose partner never came.")
        self.without_reference = counter(
            "rows_without_reference_total", "Rows not analysed: their version has no usable reference.", MV)
        self.without_version = counter("rows_without_version_total", "Rows not analysed: no version known.", ("model",))
        self.labels = counter("labels_total", "Labels joined to a logged prediction.", MV)
        self.duplicate_labels = counter("duplicate_labels_total", "Labels received again with the same value.")
        self.conflicting_labels = counter("conflicting_labels_total", "Labels refused: a different value was recorded.")
        self.unmatched_labels = counter("unmatched_labels_total", "Labels whose prediction is not (yet) logged.")
        self.evicted_orphans = counter(
            "evicted_orphan_labels_total", "Waiting labels deleted, oldest first, past MAX_ORPHAN_LABELS.")
        self.evicted_versions = counter(
            "evicted_versions_total",
            "Version monitors forgotten, least recently used first, past MAX_TRACKED_VERSIONS.")
        self.unreadable_checkpoints = counter(
            "unreadable_checkpoints_total",
            "Checkpoints this code could not read at start (another format_version, an old pickle, damage): "
            "the analysis restarted afresh, later events were still replayed.")
        self.windows = counter("windows_total", "Windows tested.", MV)
        self.drift_windows = counter("drift_windows_total", "Windows in which drift was detected.", MV)
        self.online_alarms = counter("online_alarms_total", "Alarms of the online (per-row) detector.", MV)
        self.alerts = counter("alerts_total", "Alerts raised (after episode and cool-down rules).", MV)
        self.alerts_delivered = counter("alert_deliveries_total", "Alert posts that a sink accepted.")
        self.alerts_failed = counter("alert_delivery_failures_total", "Alert posts that failed after all retries.")

        self.p_value = gauge("feature_p_value",
                             "Last window's p-value per feature (probability = prediction drift).", MVF)
        self.distance = gauge("feature_distance", "Last window's distance per feature: KS D, or total variation.", MVF)
        self.psi = gauge("feature_psi", "Last window's population stability index per feature.", MVF)
        self.feature_drift = gauge("feature_drift", "1 when the last window flagged the feature (BH at alpha).", MVF)
        self.drift = gauge("drift_detected", "1 when the last window, online detector or MMD saw drift.", MV)
        self.online_statistic = gauge("online_statistic", "Online CUSUM per feature in units of its threshold.", MVF)
        self.mmd_p_value = gauge("mmd_p_value", "Last multivariate MMD p-value.", MV)
        self.roc_auc = gauge("roc_auc", "Rolling ROC-AUC on labelled predictions.", MV)
        self.pr_auc = gauge("pr_auc", "Rolling PR-AUC (average precision) on labelled predictions.", MV)
        self.ece = gauge("calibration_error", "Rolling expected calibration error.", MV)
        self.coverage = gauge("label_coverage", "Share of logged predictions that have a label.", MV)
        self.backlog_rows = gauge("backlog_rows", "Rows accepted and persisted but not analysed yet.")
        self.ready = gauge("ready", "1 once the spool is replayed and the service accepts events.")

        self.ingest_seconds = Histogram(PREFIX + "ingest_seconds", "Accepting one request: parse, persist (fsync).",
                                        registry=r, buckets=FAST)
        self.process_seconds = Histogram(PREFIX + "process_seconds", "Analysing one accepted event or batch.",
                                         registry=r, buckets=FAST)
        self.window_seconds = Histogram(PREFIX + "window_test_seconds", "Testing one closed window.", registry=r,
                                        buckets=FAST)
        self.mmd_seconds = Histogram(PREFIX + "mmd_seconds", "One MMD test.", registry=r, buckets=SLOW)
        self.replay_seconds = Gauge(PREFIX + "replay_seconds", "How long the start-up replay of the spool took.",
                                    registry=r)
        self.skew_checks = counter("skew_checks_total", "Skew check results received (POST /v1/skew).", MV)
        self.skew_rows = gauge("skew_compared_rows", "Served rows the latest skew check compared with training's "
                                                    "point-in-time join.", MV)
        self.skew_unmatched = gauge("skew_unmatched_rows", "Sampled rows the latest skew check found no offline "
                                                          "transaction for.", MV)
        self.skew_mismatched = gauge("skew_mismatched_rows", "Rows of the latest skew check whose served value of "
                                                            "this feature differs from training's.", MVF)

    def window(self, model: str, version: str, result: dict[str, Any]) -> None:
        self.windows.labels(model, version).inc()
        if result["drift"]:
            self.drift_windows.labels(model, version).inc()
        for feature, f in result["features"].items():
            self.p_value.labels(model, version, feature).set(f["p_value"])
            self.distance.labels(model, version, feature).set(f["distance"])
            self.psi.labels(model, version, feature).set(f["psi"])
            self.feature_drift.labels(model, version, feature).set(1.0 if f["drift"] else 0.0)

    def skew(self, result: SkewResult) -> None:
        m, v = result.model, result.version
        self.skew_checks.labels(m, v).inc()
        self.skew_rows.labels(m, v).set(result.rows)
        self.skew_unmatched.labels(m, v).set(result.unmatched)
        for feature, f in result.features.items():
            self.skew_mismatched.labels(m, v, feature).set(f.mismatched)

    def performance(self, model: str, version: str, result: dict[str, Any]) -> None:
        for gauge, key in ((self.roc_auc, "roc_auc"), (self.pr_auc, "pr_auc"), (self.ece, "ece"),
                           (self.coverage, "coverage")):
            if result.get(key) is not None:
                gauge.labels(model, version).set(result[key])
