"""Prometheus metrics of the controller. Labels are bounded: phase and verdict are enums, model is the
rollouts' own (a namespace holds few)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flywheel_contracts import ModelRollout, Phase

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rollouts = Gauge(
            "flywheel_controller_rollouts", "ModelRollouts by phase.", ["phase"], registry=r
        )
        self.verdicts = Counter(
            "flywheel_controller_verdicts_total", "Analysis runs by model and verdict.", ["model", "verdict"],
            registry=r,
        )
        self.transitions = Counter(
            "flywheel_controller_transitions_total", "Phase transitions by model and new phase.", ["model", "phase"],
            registry=r,
        )
        self.rollbacks = Counter(
            "flywheel_controller_rollbacks_total", "Rollouts rolled back (traffic returned to the stable).",
            ["model"], registry=r,
        )
        self.reconcile_seconds = Histogram(
            "flywheel_controller_reconcile_seconds", "Time of one reconcile of one rollout (incl. router, providers).",
            buckets=RECONCILE_BUCKETS, registry=r,
        )
        self.errors = Counter(
            "flywheel_controller_errors_total", "Failed calls by what failed.", ["kind"], registry=r,
        )
        self.leader = Gauge("flywheel_controller_leader", "1 while this replica holds the Lease.", registry=r)

    def set_phases(self, rollouts: list[ModelRollout]) -> None:
        counts = {phase: 0 for phase in Phase}
        for rollout in rollouts:
            counts[rollout.status.phase] += 1
        for phase, n in counts.items():
            self.rollouts.labels(phase.value).set(n)
