"""Builders for the engine's tests: rollouts from spec-shaped dicts, analysis results made by hand, and a
`Flight` that drives one rollout through `reconcile` under a fake clock, as the reconciler would.

Every reconcile a Flight makes also checks the engine's promises: the route is `desired_route` of the
status returned, the requeue lies in [0.05, 5], and reconciling the status just returned with the same
tick adds nothing (a replay after a crash moves nothing twice).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from flywheel_contracts import (
    AnalysisRun,
    EvidenceState,
    Intent,
    IntentAction,
    MetricResult,
    ModelRollout,
    ModelRolloutStatus,
    Phase,
    Verdict,
)
from flywheel_controller._engine import analysis_due, desired_route, reconcile
from flywheel_controller._types import AnalysisResult, CandidateGates, Event, Outcome, RouterView, Tick

T0 = datetime(2026, 11, 30, 21, 0, tzinfo=timezone.utc)
ERRORS = {"name": "errors", "provider": "router", "metric": "error_rate", "max": 0.01}
LATENCY = {"name": "latency", "provider": "router", "metric": "latency_p99_seconds", "max": 0.05}


def rollout(
    strategy: dict[str, Any],
    *,
    stable: str | None = "v1",
    candidate: str = "v2",
    metrics: list[dict[str, Any]] | None = None,
    automatic: bool = True,
    failure_limit: int = 2,
    inconclusive_limit: int = 3,
    interval: str = "1m",
    stable_endpoint: str | None = None,
    candidate_endpoint: str | None = None,
    status: dict[str, Any] | None = None,
) -> ModelRollout:
    """A ModelRollout as a YAML file would give it (metrics default to one router error-rate metric)."""
    spec: dict[str, Any] = {
        "model": "fraud",
        "candidate": {"version": candidate, "endpoint": candidate_endpoint},
        "strategy": strategy,
        "analysis": {
            "interval": interval,
            "failureLimit": failure_limit,
            "inconclusiveLimit": inconclusive_limit,
            "metrics": [ERRORS] if metrics is None else metrics,
        },
        "rollback": {"automatic": automatic},
    }
    if stable is not None:
        spec["stable"] = {"version": stable, "endpoint": stable_endpoint}
    return ModelRollout.model_validate({"name": "fraud-v2", "spec": spec, "status": status or {}})


def canary(*steps: dict[str, Any], stickiness: dict[str, str] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"steps": list(steps)}
    if stickiness is not None:
        block["stickiness"] = stickiness
    return {"type": "Canary", "canary": block}


def blue_green(**fields: Any) -> dict[str, Any]:
    return {"type": "BlueGreen", "blueGreen": fields}


def shadow(**fields: Any) -> dict[str, Any]:
    return {"type": "Shadow", "shadow": fields}


def weight(n: int) -> dict[str, Any]:
    return {"setWeight": n}


def pause(duration: str | None = None) -> dict[str, Any]:
    return {"pause": {"duration": duration} if duration else {}}


def result(
    verdict: Verdict,
    *,
    at: datetime,
    decisive: bool = False,
    failures: int = 0,
    inconclusive: int = 0,
    metrics: dict[str, tuple[Verdict, str | None]] | None = None,
) -> AnalysisResult:
    """An analysis result made by hand: by default one metric, errors, with the run's verdict."""
    per_metric = metrics or {"errors": (verdict, f"errors {verdict.value.lower()}")}
    run = AnalysisRun(
        time=at,
        verdict=verdict,
        decisive=decisive,
        consecutiveFailures=failures,
        consecutiveInconclusive=inconclusive,
        metrics=[MetricResult(name=name, verdict=v, message=message) for name, (v, message) in per_metric.items()],
    )
    evidence = [EvidenceState(name=name, intervals=1) for name in per_metric]
    return AnalysisResult(run=run, evidence=evidence)


class Flight:
    """One rollout under a fake clock: tick it, feed it analyses, write intents and spec edits to it."""

    def __init__(self, rollout: ModelRollout, *, now: datetime = T0, router_stable: str | None = "v1") -> None:
        self.rollout = rollout
        self.now = now
        self.router_stable = router_stable
        self.events: list[Event] = []
        self.last: Outcome | None = None
        self._intents = 0

    @property
    def status(self) -> ModelRolloutStatus:
        return self.rollout.status

    @property
    def phase(self) -> Phase:
        return self.rollout.status.phase

    @property
    def reasons(self) -> list[str]:
        return [event.reason for event in self.events]

    def advance(self, seconds: float) -> Flight:
        self.now += timedelta(seconds=seconds)
        return self

    def make_tick(
        self,
        *,
        analysis: AnalysisResult | None = None,
        reachable: bool = True,
        conflict: str | None = None,
        gates: CandidateGates | None = None,
    ) -> Tick:
        router = (
            RouterView(reachable=True, stable_version=self.router_stable)
            if reachable
            else RouterView(reachable=False, error="connection refused")
        )
        return Tick(now=self.now, router=router, analysis=analysis, conflict=conflict, candidate_gates=gates)

    def tick(self, **kwargs: Any) -> Outcome:
        tick = self.make_tick(**kwargs)
        outcome = reconcile(self.rollout, tick)
        check_promises(self.rollout, tick, outcome)
        self.rollout = self.rollout.model_copy(update={"status": outcome.status})
        self.events += outcome.events
        self.last = outcome
        return outcome

    def analyse(
        self,
        verdict: Verdict = Verdict.SUCCESSFUL,
        *,
        decisive: bool = False,
        metrics: dict[str, tuple[Verdict, str | None]] | None = None,
        reachable: bool = True,
        wait: bool = True,
    ) -> Outcome:
        """Move the clock to nextAnalysisAt (`wait`) and reconcile with a run of `verdict`, its consecutive
        counters counted on from lastAnalysis as the real analysis does."""
        if wait and self.status.next_analysis_at is not None and self.status.next_analysis_at > self.now:
            self.now = self.status.next_analysis_at
        assert analysis_due(self.rollout, self.now), "the analysis is not due"
        previous = self.status.last_analysis
        failures = previous.consecutive_failures if previous else 0
        inconclusive = previous.consecutive_inconclusive if previous else 0
        unclear = verdict in (Verdict.INCONCLUSIVE, Verdict.INSUFFICIENT_SAMPLES)
        run = result(
            verdict,
            at=self.now,
            decisive=decisive,
            failures=failures + 1 if verdict is Verdict.FAILED else 0,
            inconclusive=inconclusive + 1 if unclear else 0,
            metrics=metrics,
        )
        return self.tick(analysis=run, reachable=reachable)

    def fly(self, seconds: float, verdict: Verdict = Verdict.SUCCESSFUL) -> Flight:
        """Run the reconciler's loop for `seconds` of fake time (analyses of `verdict` when due), stopping
        early at a terminal phase or a pause."""
        end = self.now + timedelta(seconds=seconds)
        while self.now <= end:
            due = analysis_due(self.rollout, self.now)
            outcome = self.analyse(verdict, wait=False) if due else self.tick()
            if self.phase.is_terminal() or self.phase is Phase.PAUSED:
                break
            self.advance(outcome.requeue_after)
        return self

    def intend(self, action: IntentAction, *, full: bool = False) -> str:
        self._intents += 1
        intent = Intent(id=f"intent-{self._intents}", action=action, full=full, requestedAt=self.now)
        self.rollout = self.rollout.model_copy(update={"status": self.status.model_copy(update={"intent": intent})})
        return intent.id

    def edit(self, **spec_changes: Any) -> None:
        """A changed spec, as the API server gives it: a new generation."""
        spec = self.rollout.spec.model_copy(update=spec_changes)
        self.rollout = self.rollout.model_copy(update={"spec": spec, "generation": self.rollout.generation + 1})


def check_promises(rollout: ModelRollout, tick: Tick, outcome: Outcome) -> None:
    assert outcome.route == desired_route(rollout, outcome.status)
    assert 0.05 <= outcome.requeue_after <= 5.0
    again = reconcile(rollout.model_copy(update={"status": outcome.status}), tick)
    assert again.events == [], f"replaying the same tick moved again: {again.events}"
    assert again.status == outcome.status
    assert again.route == outcome.route
