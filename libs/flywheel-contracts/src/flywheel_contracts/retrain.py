"""A RetrainPolicy as the controller and `kubectl flywheel` read it.

The CRD (manifests/crds/flywheel.dev_retrainpolicies.yaml) is the schema the API server enforces; these models
are the same shape in Python, with the CRD's field names (camelCase aliases) and defaults, so a policy read
from a YAML file (local mode, no API server to default it) means the same as one read from a cluster.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .rollout import DURATION_PATTERN, parse_duration
from .routes import MODEL_PATTERN

PLURAL = "retrainpolicies"
KIND = "RetrainPolicy"
MANUAL_REQUEST_ANNOTATION = "flywheel.dev/retrain-requested-at"
"""Set (RFC 3339) by `kubectl flywheel retrain`: a person asks for a run."""
HISTORY_KEPT = 20

_SPEC = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Trigger(str, Enum):
    """What started a retraining."""

    DRIFT_ALERT = "DriftAlert"  # the drift service alerted on the serving version
    PERFORMANCE = "Performance"  # the serving version's labelled PR-AUC fell below the policy's minimum
    SCHEDULE = "Schedule"  # the serving version is older than schedule.every
    MANUAL = "Manual"  # a person asked (kubectl flywheel retrain)


class RetrainPhase(str, Enum):
    IDLE = "Idle"  # waiting for a trigger
    TRAINING = "Training"  # a trainer Job runs
    GATING = "Gating"  # reading the published version's gates
    ROLLING_OUT = "RollingOut"  # its ModelRollout runs
    SUSPENDED = "Suspended"  # spec.suspend
    FAILED = "Failed"  # the last run could not finish

    def busy(self) -> bool:
        """A run is under way: no other may start."""
        return self in (RetrainPhase.TRAINING, RetrainPhase.GATING, RetrainPhase.ROLLING_OUT)


AlertCategory = Literal["data", "performance"]


def _every_category() -> list[AlertCategory]:
    return ["data", "performance"]


class DriftAlertTrigger(BaseModel):
    model_config = _SPEC
    categories: list[AlertCategory] = Field(default_factory=_every_category, min_length=1, max_length=2)


class PerformanceTrigger(BaseModel):
    model_config = _SPEC
    minimum: float = Field(ge=0, le=1)
    min_labels: int = Field(200, alias="minLabels", ge=1)
    confidence: float = Field(0.95, ge=0, le=0.999)
    """How sure the labels must make it that PR-AUC is below `minimum`: the trigger fires when the one-sided upper
    confidence bound of the labelled PR-AUC is below it (0: the point estimate, as before). A few dozen frauds
    move PR-AUC by several points between windows of unchanged traffic."""


class ScheduleTrigger(BaseModel):
    model_config = _SPEC
    every: str = Field(pattern=DURATION_PATTERN)

    @property
    def every_s(self) -> float:
        return parse_duration(self.every)


class Triggers(BaseModel):
    model_config = _SPEC
    drift_alert: DriftAlertTrigger | None = Field(None, alias="driftAlert")
    performance: PerformanceTrigger | None = None
    schedule: ScheduleTrigger | None = None
    manual: bool = True

    @model_validator(mode="after")
    def _at_least_one(self) -> Triggers:
        if not (self.drift_alert or self.performance or self.schedule or self.manual):
            raise ValueError("at least one trigger (driftAlert, performance, schedule, or manual true)")
        return self


class Training(BaseModel):
    model_config = _SPEC
    mode: Literal["Stateless", "Stateful"] = "Stateless"
    window: str = Field("720h", pattern=DURATION_PATTERN)
    min_new_labels: int = Field(500, alias="minNewLabels", ge=0)
    epochs: int | None = Field(None, ge=1)


class Gates(BaseModel):
    model_config = _SPEC
    min_pr_auc_gain: float = Field(0.0, alias="minPRAUCGain", ge=-1, le=1)
    ci_level: float = Field(0.9, alias="ciLevel", gt=0, lt=1)
    max_ece_increase: float = Field(0.02, alias="maxECEIncrease", ge=0, le=1)
    max_slice_pr_auc_drop: float = Field(0.05, alias="maxSlicePRAUCDrop", ge=0, le=1)


class RolloutTemplate(BaseModel):
    model_config = _SPEC
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any]

    @model_validator(mode="after")
    def _filled_in_by_the_controller(self) -> RolloutTemplate:
        if "strategy" not in self.spec:
            raise ValueError("rolloutTemplate.spec needs a strategy (as a ModelRollout's spec.strategy)")
        if {"model", "stable", "candidate"} & set(self.spec):
            raise ValueError(
                "rolloutTemplate.spec may not set model, stable or candidate (the controller fills them in)"
            )
        return self


class RetrainPolicySpec(BaseModel):
    model_config = _SPEC
    model: str = Field(pattern=MODEL_PATTERN, max_length=63)
    suspend: bool = False
    triggers: Triggers = Field(default_factory=Triggers)
    training: Training = Field(default_factory=Training)
    gates: Gates = Field(default_factory=Gates)
    cooldown: str = Field("6h", pattern=DURATION_PATTERN)
    rollout_template: RolloutTemplate = Field(alias="rolloutTemplate")

    @property
    def cooldown_s(self) -> float:
        return parse_duration(self.cooldown)


class RetrainRun(BaseModel):
    """One retraining, linked end to end: trigger -> Job -> version -> gates -> rollout -> verdict."""

    model_config = _SPEC
    trigger: Trigger | None = None
    reason: str | None = None
    started_at: datetime | None = Field(None, alias="startedAt")
    job: str | None = None
    version: str | None = None
    gates_passed: bool | None = Field(None, alias="gatesPassed")
    rollout: str | None = None
    verdict: str | None = None
    finished_at: datetime | None = Field(None, alias="finishedAt")


class RetrainPolicyStatus(BaseModel):
    model_config = _SPEC
    phase: RetrainPhase = RetrainPhase.IDLE
    message: str | None = None
    observed_generation: int | None = Field(None, alias="observedGeneration")
    next_eligible_at: datetime | None = Field(None, alias="nextEligibleAt")
    last_run: RetrainRun | None = Field(None, alias="lastRun")
    history: list[dict[str, Any]] = Field(default_factory=list, max_length=HISTORY_KEPT)


class RetrainPolicy(BaseModel):
    """A whole RetrainPolicy object (metadata as the API server gives it)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RetrainPolicySpec
    status: RetrainPolicyStatus = Field(default_factory=RetrainPolicyStatus)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    def manual_request(self) -> str | None:
        """The RFC 3339 instant of the latest `kubectl flywheel retrain`, if any."""
        value = (self.metadata.get("annotations") or {}).get(MANUAL_REQUEST_ANNOTATION)
        return str(value) if value else None
