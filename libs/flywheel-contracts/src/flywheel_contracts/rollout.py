"""A ModelRollout as the controller, `kubectl flywheel` and the local runner read and write it.

The CRD (manifests/crds/flywheel.dev_modelrollouts.yaml) is the schema the API server enforces; these models
are the same shape in Python, so every reader validates what it reads instead of picking at dicts. Field
names are the CRD's (camelCase aliases); defaults are the CRD's defaults, so a spec read from a YAML file
(local mode, no API server to default it) means the same as one read from a cluster.

Status is written by the controller only, with one exception: `status.intent`, where a person (through
`kubectl flywheel`) asks for promote/abort/retry/undo/pause/resume. Intents live in status, not in spec or
annotations, because a GitOps tool (Argo CD, Flux) re-applying an unchanged spec never touches status: the
intent survives the sync. The controller handles an intent once (`status.intentHandled` = its id) and never
writes `status.intent` itself.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .routes import HEADER_PATTERN, MODEL_PATTERN, VERSION_PATTERN

GROUP = "flywheel.dev"
VERSION = "v1alpha1"
PLURAL = "modelrollouts"
KIND = "ModelRollout"
FINALIZER = "flywheel.dev/traffic"
"""Held while a rollout may have moved traffic, so deleting it first returns the traffic to the stable."""

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DECISIONS_KEPT = 20
"""Entries of status.decisions kept (the newest); older moves are in the Events and the controller's log."""

_SPEC = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
_STATUS = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (`90s`, `5m`, `1h30m`, `250ms`); ValueError when malformed."""
    if not re.fullmatch(DURATION_PATTERN, text or ""):
        raise ValueError(f"duration {text!r}: expected a Go duration such as 30s, 5m or 1h30m")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


class Phase(str, Enum):
    """Where a rollout is. Terminal phases end the rollout until its spec changes or a person retries."""

    PENDING = "Pending"  # accepted, not started yet (or waiting for the router to answer)
    PROGRESSING = "Progressing"  # the candidate takes traffic (or mirrored traffic) and is judged each interval
    PAUSED = "Paused"  # holding the current weight: an open pause step, a person's pause, or too many inconclusive runs
    SUCCEEDED = "Succeeded"  # the candidate is the stable (or a shadow run ended with a passing verdict)
    ROLLED_BACK = "RolledBack"  # the analysis failed; all traffic is back on the stable
    ABORTED = "Aborted"  # a person aborted; all traffic is back on the stable
    FAILED = "Failed"  # the rollout cannot run (refused, a conflicting rollout); traffic untouched

    def is_terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED)


class Verdict(str, Enum):
    """The outcome of one metric (or one whole analysis run) over one interval."""

    SUCCESSFUL = "Successful"  # measured with enough samples; no evidence the candidate breaks the bound
    FAILED = "Failed"  # the candidate breaks the bound (with the confidence the statistics ask for)
    INCONCLUSIVE = "Inconclusive"  # could not be measured (provider down, empty query, no stable to compare)
    INSUFFICIENT_SAMPLES = "InsufficientSamples"  # fewer than minSamples candidate samples this interval


class IntentAction(str, Enum):
    """What a person asks the controller to do (`kubectl flywheel <action>`)."""

    PROMOTE = "promote"  # leave an open pause (or, with full, skip every remaining step and analysis)
    ABORT = "abort"  # all traffic back to the stable now; phase Aborted
    RETRY = "retry"  # start an ended (RolledBack, Aborted, Failed) rollout again from its first step
    UNDO = "undo"  # after a success: make the previous stable the stable again
    PAUSE = "pause"  # hold the current weight until resume
    RESUME = "resume"  # go on after a pause


# ----------------------------------------------------------------------------------------------- spec


class VersionRef(BaseModel):
    model_config = _SPEC

    version: str = Field(pattern=VERSION_PATTERN, max_length=63)
    endpoint: str | None = None


class PauseSpec(BaseModel):
    model_config = _SPEC

    duration: str | None = Field(None, pattern=DURATION_PATTERN)

    def seconds(self) -> float | None:
        return None if self.duration is None else parse_duration(self.duration)


class Step(BaseModel):
    """Exactly one of setWeight or pause."""

    model_config = _SPEC

    set_weight: int | None = Field(None, alias="setWeight", ge=0, le=100)
    pause: PauseSpec | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Step:
        if (self.set_weight is None) == (self.pause is None):
            raise ValueError("a step sets exactly one of setWeight or pause")
        return self

    def describe(self) -> str:
        if self.set_weight is not None:
            return f"setWeight {self.set_weight}"
        assert self.pause is not None
        return f"pause {self.pause.duration}" if self.pause.duration else "pause (until promoted)"


class StickinessSpec(BaseModel):
    model_config = _SPEC

    header: str | None = Field(None, pattern=HEADER_PATTERN)
    cookie: str | None = None


class CanarySpec(BaseModel):
    model_config = _SPEC

    steps: list[Step] = Field(min_length=1, max_length=32)
    stickiness: StickinessSpec | None = None


class ShadowSpec(BaseModel):
    model_config = _SPEC

    mirror_percent: int = Field(100, alias="mirrorPercent", ge=1, le=100)
    duration: str = Field("30m", pattern=DURATION_PATTERN)
    promote: bool = False


class BlueGreenSpec(BaseModel):
    model_config = _SPEC

    preview_header: str = Field("x-flywheel-preview", alias="previewHeader", pattern=HEADER_PATTERN)
    preview_duration: str = Field("10m", alias="previewDuration", pattern=DURATION_PATTERN)
    auto_promote: bool = Field(True, alias="autoPromote")
    scale_down_delay: str = Field("5m", alias="scaleDownDelay", pattern=DURATION_PATTERN)


class StrategySpec(BaseModel):
    model_config = _SPEC

    type: Literal["Canary", "Shadow", "BlueGreen"]
    canary: CanarySpec | None = None
    shadow: ShadowSpec | None = None
    blue_green: BlueGreenSpec | None = Field(None, alias="blueGreen")

    @model_validator(mode="after")
    def _block_matches_type(self) -> StrategySpec:
        # The CRD's CEL rules say the same; repeated here for rollouts read from files (local mode).
        if self.type == "Canary" and self.canary is None:
            raise ValueError("type Canary needs canary (with its steps)")
        if self.type == "Shadow" and self.shadow is None:
            object.__setattr__(self, "shadow", ShadowSpec())
        if self.type == "BlueGreen" and self.blue_green is None:
            object.__setattr__(self, "blue_green", BlueGreenSpec())
        return self


class MetricSpec(BaseModel):
    model_config = _SPEC

    name: str
    provider: Literal["router", "drift", "prometheus"]
    metric: str | None = None
    query: str | None = None
    max: float | None = None
    min: float | None = None
    relative_to_stable: bool = Field(False, alias="relativeToStable")

    @model_validator(mode="after")
    def _bounds(self) -> MetricSpec:
        if self.max is None and self.min is None:
            raise ValueError(f"metric {self.name}: needs max, min or both")
        if self.provider == "prometheus" and not self.query:
            raise ValueError(f"metric {self.name}: a prometheus metric needs a query")
        if self.provider != "prometheus" and not self.metric:
            raise ValueError(f"metric {self.name}: a {self.provider} metric needs metric")
        return self


class AnalysisSpec(BaseModel):
    model_config = _SPEC

    interval: str = Field("1m", pattern=DURATION_PATTERN)
    min_samples: int = Field(100, alias="minSamples", ge=1)
    failure_limit: int = Field(2, alias="failureLimit", ge=1)
    inconclusive_limit: int = Field(5, alias="inconclusiveLimit", ge=1)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    evidence: Literal["Sequential", "Interval"] = "Sequential"
    metrics: list[MetricSpec] = Field(default_factory=list, max_length=16)

    def interval_seconds(self) -> float:
        return parse_duration(self.interval)


class RollbackSpec(BaseModel):
    model_config = _SPEC

    automatic: bool = True


class ModelRolloutSpec(BaseModel):
    model_config = _SPEC

    model: str = Field(pattern=MODEL_PATTERN, max_length=63)
    stable: VersionRef | None = None
    candidate: VersionRef
    strategy: StrategySpec
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    rollback: RollbackSpec = Field(default_factory=RollbackSpec)

    @model_validator(mode="after")
    def _distinct(self) -> ModelRolloutSpec:
        if self.stable is not None and self.stable.version == self.candidate.version:
            raise ValueError("candidate.version must differ from stable.version")
        return self


# --------------------------------------------------------------------------------------------- status


class MetricResult(BaseModel):
    """One metric's figures and verdict for one interval (status.lastAnalysis.metrics[])."""

    model_config = _STATUS

    name: str
    verdict: Verdict
    value: float | None = None  # the candidate's value this interval (relativeToStable: candidate - stable)
    stable_value: float | None = Field(None, alias="stableValue")
    samples: int = 0  # candidate samples this interval
    stable_samples: int = Field(0, alias="stableSamples")
    effect: float | None = None  # cumulative estimate of (candidate - bound) or (candidate - stable - bound)
    p_value: float | None = Field(None, alias="pValue")  # always-valid p-value of "the candidate is within bound"
    message: str | None = None


class AnalysisRun(BaseModel):
    model_config = _STATUS

    time: datetime
    step: int | None = None
    verdict: Verdict
    consecutive_failures: int = Field(0, alias="consecutiveFailures")
    consecutive_inconclusive: int = Field(0, alias="consecutiveInconclusive")
    decisive: bool = False  # a sequential test crossed its boundary: one failure is enough evidence
    metrics: list[MetricResult] = Field(default_factory=list)


class EvidenceState(BaseModel):
    """Running sums one metric's sequential test carries between intervals (status.evidence[])."""

    model_config = _STATUS

    name: str
    intervals: int = 0
    candidate_n: int = Field(0, alias="candidateN")
    candidate_x: int = Field(0, alias="candidateX")
    stable_n: int = Field(0, alias="stableN")
    stable_x: int = Field(0, alias="stableX")
    p_value: float = Field(1.0, alias="pValue")  # the smallest always-valid p-value so far (it never rises)


class DecisionRecord(BaseModel):
    """One move of the controller, so `kubectl get -o yaml` explains the rollout (status.decisions[])."""

    model_config = _STATUS

    time: datetime
    step: int | None = None
    action: str  # e.g. SetWeight, Pause, Promote, Rollback, Abort, Resume, Succeed
    verdict: Verdict | None = None
    weight: int | None = None
    message: str


class Intent(BaseModel):
    model_config = _STATUS

    id: str = Field(min_length=1, max_length=64)
    action: IntentAction
    full: bool = False
    requested_at: datetime | None = Field(None, alias="requestedAt")


class Condition(BaseModel):
    model_config = _STATUS

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: datetime = Field(alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


class ModelRolloutStatus(BaseModel):
    model_config = _STATUS

    observed_generation: int | None = Field(None, alias="observedGeneration")
    phase: Phase = Phase.PENDING
    message: str | None = None
    stable_version: str | None = Field(None, alias="stableVersion")
    previous_stable_version: str | None = Field(None, alias="previousStableVersion")
    candidate_weight: int = Field(0, alias="candidateWeight", ge=0, le=100)
    current_step_index: int = Field(0, alias="currentStepIndex", ge=0)
    current_step: str | None = Field(None, alias="currentStep")
    step_started_at: datetime | None = Field(None, alias="stepStartedAt")
    started_at: datetime | None = Field(None, alias="startedAt")
    finished_at: datetime | None = Field(None, alias="finishedAt")
    paused_reason: str | None = Field(None, alias="pausedReason")
    next_analysis_at: datetime | None = Field(None, alias="nextAnalysisAt")
    old_stable_until: datetime | None = Field(None, alias="oldStableUntil")
    last_analysis: AnalysisRun | None = Field(None, alias="lastAnalysis")
    evidence: list[EvidenceState] = Field(default_factory=list)
    decisions: list[DecisionRecord] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    intent: Intent | None = None
    intent_handled: str | None = Field(None, alias="intentHandled")

    @field_validator("decisions")
    @classmethod
    def _bounded(cls, value: list[DecisionRecord]) -> list[DecisionRecord]:
        return value[-DECISIONS_KEPT:]

    def to_json(self) -> dict:
        """The JSON the status subresource stores (camelCase, no None fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ModelRollout(BaseModel):
    """The whole object: metadata the controller needs, spec, status."""

    model_config = _SPEC

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 1
    resource_version: str = Field("", alias="resourceVersion")
    creation_timestamp: datetime | None = Field(None, alias="creationTimestamp")
    deletion_timestamp: datetime | None = Field(None, alias="deletionTimestamp")
    finalizers: tuple[str, ...] = ()
    spec: ModelRolloutSpec
    status: ModelRolloutStatus = Field(default_factory=ModelRolloutStatus)

    @classmethod
    def from_object(cls, obj: dict) -> ModelRollout:
        """From the API server's (or a YAML file's) object: apiVersion, kind, metadata, spec, status."""
        meta = obj.get("metadata") or {}
        return cls.model_validate({
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace") or "default",
            "uid": meta.get("uid", ""),
            "generation": meta.get("generation", 1),
            "resourceVersion": meta.get("resourceVersion", ""),
            "creationTimestamp": meta.get("creationTimestamp"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
            "finalizers": tuple(meta.get("finalizers") or ()),
            "spec": obj.get("spec") or {},
            "status": obj.get("status") or {},
        })

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
