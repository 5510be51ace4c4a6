"""The values the pure core passes around: what was observed, what the analysis concluded, what to do.

Adapters (router/drift/Prometheus providers, the Kubernetes or file store, the router admin client) turn
the outside world into these; the analysis (`_analysis`) and the state machine (`_engine`) consume and
produce them and import no HTTP client, Kubernetes client or framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from flywheel_contracts import (
    AnalysisRun,
    EvidenceState,
    Histogram,
    ModelRollout,
    ModelRolloutStatus,
    ShadowStats,
    VersionStats,
)


@dataclass(frozen=True)
class Counts:
    """Events out of trials for one version over one interval (errors of requests, declines of predictions,
    decision mismatches of compared pairs, latencies above a bound of requests)."""

    n: int
    x: int

    @property
    def rate(self) -> float | None:
        return self.x / self.n if self.n else None


@dataclass(frozen=True)
class Observation:
    """One metric over one interval, as a provider measured it.

    kind "proportion": `candidate` (and, for relativeToStable, `stable`) counts; the analysis runs a
    sequential test on them. kind "quantile": latency histograms of both versions over the interval (the
    analysis turns them into exceedance counts above a bound, then a proportion test). kind "value": one
    number (drift share, a PromQL result), judged against min/max with no statistics. `error` set: the
    provider could not measure (down, empty result) and the metric is Inconclusive.
    """

    name: str
    kind: Literal["proportion", "quantile", "value"]
    candidate: Counts | None = None
    stable: Counts | None = None
    candidate_histogram: Histogram | None = None
    stable_histogram: Histogram | None = None
    quantile: float = 0.99
    value: float | None = None
    stable_value: float | None = None
    samples: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RouterWindow:
    """The router's figures for one model over one interval, summed over every replica that answered:
    growth of the cumulative counters (flywheel_contracts.RouterStats) between two reads of each replica.
    `candidate`/`stable` are None when that version took no traffic (or is not in the route)."""

    candidate: VersionStats | None
    stable: VersionStats | None
    shadow: ShadowStats | None
    replicas: int
    seconds: float


@dataclass(frozen=True)
class AnalysisResult:
    """One analysis run: per-metric results, the run's verdict, and the evidence to carry forward."""

    run: AnalysisRun
    evidence: list[EvidenceState]

    @property
    def decisive(self) -> bool:
        return self.run.decisive


@dataclass(frozen=True)
class RouterView:
    """What the router says about the model right now (None fields: the router did not answer)."""

    reachable: bool
    stable_version: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CandidateGates:
    """What the model repository says of the candidate version before any traffic moves: its metadata.json
    `gates`, written by the trainer (flywheel_core.model_repo.VersionGates).

    verdict "accepted": it passed its gates, or was published before gates existed; "rejected": published as
    rejected, `reason` names the failed gates; "unverified": its metadata cannot be read from the repository
    (not published there, unreadable), `reason` says why. Only "accepted" may start."""

    verdict: Literal["accepted", "rejected", "unverified"]
    reason: str = ""


@dataclass(frozen=True)
class Tick:
    """Everything the state machine may look at besides spec and status."""

    now: datetime
    router: RouterView
    analysis: AnalysisResult | None = None  # present when an interval's analysis was just run
    conflict: str | None = None  # another live rollout of the same model, named, when this one is the later
    candidate_gates: CandidateGates | None = None  # None: not checked (no model repository configured)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the rollout (one per transition)."""

    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


@dataclass(frozen=True)
class DesiredRoute:
    """The route the router should hold for the model, derived from spec + status alone (level-triggered:
    a controller restarted between writing status and writing the route writes the same route again)."""

    stable_version: str
    stable_endpoint: str | None = None
    candidate_version: str | None = None
    candidate_endpoint: str | None = None
    candidate_weight: float = 0.0
    shadow_percent: float = 0.0
    preview_header: str | None = None
    sticky_header: str | None = None
    sticky_cookie: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What one reconcile decided: the new status, the Events to post, and the route to hold (None: leave
    the router alone, e.g. a refused rollout or one waiting for the router)."""

    status: ModelRolloutStatus
    events: list[Event] = field(default_factory=list)
    route: DesiredRoute | None = None
    requeue_after: float = 1.0  # seconds until this rollout should be looked at again


def stable_version(rollout: ModelRollout) -> str | None:
    """The version the candidate is judged against: the one the controller made stable, else the spec's."""
    if rollout.status.stable_version:
        return rollout.status.stable_version
    return rollout.spec.stable.version if rollout.spec.stable else None
