"""Prometheus metrics of the router. Labels are bounded: model and version come from the routes in force
(other versions and unrouted models fold into `other` / `unrouted`), role is stable|candidate|pinned."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from ._stats import DIFF_BUCKETS, LATENCY_BUCKETS


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "flywheel_router_requests_total",
            "Inference requests by the version that answered and the status class.",
            ["model", "version", "role", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "flywheel_router_request_seconds",
            "Time to the upstream's whole answer, per answering version.",
            ["model", "version", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_failures = Counter(
            "flywheel_router_upstream_failures_total",
            "Upstream connections refused/reset or timed out.",
            ["model", "version", "kind"],
            registry=r,
        )
        self.retries = Counter(
            "flywheel_router_candidate_retries_total",
            "Requests retried on the stable after the candidate failed.",
            ["model"],
            registry=r,
        )
        self.predictions = Counter(
            "flywheel_router_predictions_total", "Scored instances per version.", ["model", "version"], registry=r
        )
        self.declines = Counter(
            "flywheel_router_declines_total", "Declined instances per version.", ["model", "version"], registry=r
        )
        self.shadow_mirrored = Counter(
            "flywheel_router_shadow_mirrored_total", "Requests queued for the shadow candidate.", ["model"], registry=r
        )
        self.shadow_dropped = Counter(
            "flywheel_router_shadow_dropped_total",
            "Mirrored requests dropped because the shadow queue was full.",
            ["model"],
            registry=r,
        )
        self.shadow_skipped = Counter(
            "flywheel_router_shadow_skipped_total",
            "Copies not made while the shadow candidate was failing (paused).",
            ["model"],
            registry=r,
        )
        self.shadow_errors = Counter(
            "flywheel_router_shadow_candidate_errors_total",
            "Shadow requests the candidate failed or answered 5xx.",
            ["model", "version"],
            registry=r,
        )
        self.shadow_predictions = Counter(
            "flywheel_router_shadow_predictions_compared_total",
            "Instances compared between stable and shadow.",
            ["model", "version"],
            registry=r,
        )
        self.shadow_mismatches = Counter(
            "flywheel_router_shadow_decision_mismatches_total",
            "Compared instances whose decisions differ.",
            ["model", "version"],
            registry=r,
        )
        self.shadow_score_diff = Histogram(
            "flywheel_router_shadow_score_difference",
            "|candidate - stable| score per compared instance.",
            ["model", "version"],
            buckets=DIFF_BUCKETS,
            registry=r,
        )
        self.shadow_queue = Gauge("flywheel_router_shadow_queue_depth", "Mirrored requests waiting.", registry=r)
        self.route_generation = Gauge(
            "flywheel_router_route_generation", "Generation of the route in force.", ["model"], registry=r
        )
        self.candidate_weight = Gauge(
            "flywheel_router_candidate_weight_percent", "Candidate weight of the route in force.", ["model"], registry=r
        )
        self.route_updates = Counter(
            "flywheel_router_route_updates_total", "Route sets applied from the route source.", registry=r
        )

    def render(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
