"""What the drift service tells others: alerts (pushed to the rollout controller and the trainer) and the
report (`GET /v1/report`, read by the controller's drift provider), as typed, versioned models. Here in
flywheel-contracts so the drift service (which builds them) and its readers share one definition.

The JSON form of each is documented in services/drift/README.md ("Results and alerts"). Every alert and
every report carries `schema_version`; a reader refuses a version it does not know rather than guess.
Additions keep the version (readers ignore fields they do not read); a change to an existing field's
meaning or type, or a removal, raises it. The report is built through these models, so what is served
is what is documented. Pure: pydantic only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .skew import SkewResult

SCHEMA_VERSION: Final = 1

_STRICT = ConfigDict(extra="forbid", frozen=True)


def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds, as CloudEvents `time`."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Category(StrEnum):
    """What kind of change an alert is about; each has its own episode (one shift, one alert)."""

    DATA = "data"
    """The inputs or the scores moved (window tests, online detector, MMD)."""
    PERFORMANCE = "performance"
    """Delayed labels show the model doing worse than on its test set."""


class Detector(StrEnum):
    """Which detector produced the evidence."""

    WINDOW = "window"
    """Per-feature tests on closed windows (`alert_after_windows` drifted windows in a row)."""
    ONLINE = "online"
    """The per-row rank CUSUM crossed its threshold."""
    MMD = "mmd"
    """The multivariate MMD test drifted on two runs in a row."""
    PERFORMANCE = "performance"
    """Rolling ROC-AUC, PR-AUC or ECE on labelled rows past their tolerance."""


class Verdict(StrEnum):
    """The service's current judgement of one version's traffic."""

    DRIFTED = "drifted"
    """The last closed window drifted, or an alert episode is open."""
    STABLE = "stable"
    """At least one window closed, the last one did not drift, and no episode is open."""
    INCONCLUSIVE = "inconclusive"
    """No window has closed yet: too little traffic to judge."""

    def is_drift(self) -> bool:
        return self is Verdict.DRIFTED


class FeatureDrift(BaseModel):
    """One drifted feature in a window alert (numbers that are not finite are null in the report)."""

    model_config = _STRICT

    p_value: float | None
    q_value: float | None
    distance: float | None
    psi: float | None


class WindowEvidence(BaseModel):
    model_config = _STRICT

    index: int
    rows: int
    drifted: dict[str, FeatureDrift]
    consecutive: int


class OnlineEvidence(BaseModel):
    """An online alarm: after `run_length` rows `feature` crossed the threshold going `direction`."""

    model_config = _STRICT

    at: float
    feature: str
    direction: Literal["up", "down"]
    run_length: int
    statistic: float
    also: list[str]


class MMDResult(BaseModel):
    model_config = _STRICT

    at: float
    rows: int
    reference_rows: int
    columns: list[str]
    p_value: float | None
    distance: float | None
    threshold: float | None
    drift: bool
    seconds: float


class PerformanceResult(BaseModel):
    """Rolling metrics on the most recently labelled predictions (`_performance.evaluate`)."""

    model_config = _STRICT

    rows: int
    positives: int
    coverage: float | None
    roc_auc: float | None
    pr_auc: float | None
    ece: float | None
    baseline: dict[str, float | None]
    degraded: list[str]
    status: Literal["insufficient_labels", "insufficient_positives", "ok", "degraded"]
    at: float | None = None


class Alert(BaseModel):
    """One alert: the first evidence of an episode. Exactly the detector's evidence field is set."""

    model_config = _STRICT

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    model: str
    version: str
    category: Category
    detector: Detector
    at: float
    """Event time of the evidence, seconds since the epoch."""
    time: str = ""
    """`at` as RFC 3339 (filled in from `at`)."""
    features: list[str] = Field(default_factory=list)
    prediction_drift: bool | None = None
    window: WindowEvidence | None = None
    online: OnlineEvidence | None = None
    mmd: MMDResult | None = None
    performance: PerformanceResult | None = None

    @model_validator(mode="before")
    @classmethod
    def _time_from_at(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("time") and isinstance(data.get("at"), (int, float)):
            data = {**data, "time": iso(float(data["at"]))}
        return data

    @model_validator(mode="after")
    def _evidence_matches_detector(self) -> Alert:
        present = {name for name in ("window", "online", "mmd", "performance") if getattr(self, name) is not None}
        if present != {self.detector.value}:
            raise ValueError(f"a {self.detector.value} alert carries {self.detector.value} evidence only, "
                             f"got {sorted(present)}")
        return self

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (unset evidence left out)."""
        return self.model_dump(mode="json", exclude_none=True)


# ---- the report ------------------------------------------------------------------------------------------

_REPORT = ConfigDict(extra="forbid", frozen=True)


class FeatureLast(BaseModel):
    """A feature's result in the last closed window."""

    model_config = _REPORT

    p_value: float | None
    q_value: float | None
    distance: float | None
    psi: float | None
    drift: bool
    mean: float | None


class FeatureReport(BaseModel):
    model_config = _REPORT

    name: str
    kind: Literal["numeric", "categorical", "skipped"]
    test: str
    last: FeatureLast | None = None
    """Absent until a window closes."""
    current_histogram: list[float] | None = None
    reference_histogram: dict[str, list[float]] | None = None
    reference_mean: float | None = None
    categories: list[float] | None = None


class Episode(BaseModel):
    model_config = _REPORT

    active: bool
    last_alert_at: float | None


class OnlineReport(BaseModel):
    """The online detector: its threshold and where it came from (`_state.online_threshold`: ert, k,
    features, n_ref, h, method, source, ...), its current statistics and its alarms."""

    model_config = ConfigDict(extra="allow", frozen=True)

    statistics: dict[str, float | None] | None = None
    run_length: int | None = None
    alarms: list[OnlineEvidence]


class UnseenCount(BaseModel):
    """How often the transformer flagged one input field as never seen in training (`unseen`)."""

    model_config = _REPORT

    count: int
    share: float | None
    """`count` over the version's predictions whose response carried `unseen` (None before any did)."""


class VersionReport(BaseModel):
    model_config = _REPORT

    model: str
    version: str
    verdict: Verdict
    drift: bool
    """`verdict == drifted` (kept for readers of schema 0)."""
    rows: int
    windows: int
    open_window_rows: int
    episodes: dict[Category, Episode]
    last_window: dict[str, Any] | None
    reference: dict[str, Any]
    features: list[FeatureReport]
    history: list[dict[str, Any]]
    online: OnlineReport
    mmd: list[MMDResult]
    performance: PerformanceResult | None
    performance_history: list[dict[str, Any]]
    predictions_logged: int
    predictions_labelled: int
    alerts: list[Alert]
    unseen: dict[str, UnseenCount] | None = None
    """Added in schema 1 (absent from older reports): per input field, predictions flagged unseen."""
    unseen_rows: int | None = None
    """Added in schema 1: predictions whose response said which inputs were unseen (older transformers do not)."""
    skew: SkewResult | None = None
    """Added in schema 1: the latest run-time skew check of this version (flywheel_contracts.skew), None before
    the first."""


class Backlog(BaseModel):
    model_config = _REPORT

    rows: int
    bytes: int


class Report(BaseModel):
    """`GET /v1/report`: the service's status and every monitored version that matches the filters."""

    model_config = _REPORT

    schema_version: Literal[1] = SCHEMA_VERSION
    ready: bool
    ready_after_s: float | None
    replayed_events: int
    backlog: Backlog
    mmd: str
    settings: dict[str, Any]
    versions: list[VersionReport]
    computed_at: float | None = None
    """Added in schema 1: when the analysis thread built `versions` (epoch seconds); the report never waits for
    ingestion, it serves the latest state it built."""
    age_seconds: float | None = None
    """Added in schema 1: seconds between `computed_at` and this answer."""
