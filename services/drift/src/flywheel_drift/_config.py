"""The drift service's settings: environment variables `FLYWHEEL_DRIFT_*`, read once at start-up.

A bad value stops the process before it listens, with a message that names the variable, the value and
what was expected. Defaults are chosen for the reference use case (card fraud, a few hundred events per
second at most per replica); each field says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flywheel_contracts.admission import DEFAULT_EXEMPT_PATHS, AdmissionSettings
from flywheel_contracts.skew import MAX_SAMPLE_ROWS
from flywheel_core.settings import describe_setting_errors

from ._errors import ConfigError
from ._features import DEFAULT_ONLINE, DEFAULT_SKIPPED

ENV_PREFIX = "FLYWHEEL_DRIFT_"

# Comma-separated in the environment, not JSON: NoDecode hands the raw string to `_split`.
Names = Annotated[tuple[str, ...], NoDecode]


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if not isinstance(value, Iterable):
        raise TypeError(f"expected a comma list or a sequence of names, got {type(value).__name__}")
    return tuple(str(part) for part in value)


# Admission control (MAX_IN_FLIGHT, MAX_WAITING, MAX_WAIT_MS, RETRY_AFTER_S, SHED_EXEMPT_PATHS): intake past the
# limit is answered 503 + Retry-After at once instead of queueing in the event loop (the backlog's 429 bounds the
# rows waiting for analysis; this bounds the requests being parsed). Reading the report is never shed: an operator
# looks at it precisely when the service is busy.
if TYPE_CHECKING:  # mypy cannot follow a class built at run time; its fields are AdmissionSettings'
    _Admission = AdmissionSettings
else:
    _Admission = AdmissionSettings.with_defaults(shed_exempt_paths=DEFAULT_EXEMPT_PATHS + ",/v1/report,/report")


class Settings(BaseSettings, _Admission):
    """Every knob of the drift service; see each field for its unit, default and why."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, protected_namespaces=())

    http_host: str = "0.0.0.0"
    """Interface to listen on (default 0.0.0.0, all interfaces, as in a pod)."""

    http_port: int = Field(8070, ge=1, le=65535)
    """HTTP port (default 8070, the port `make up` and the chart give the drift service)."""

    model_repo: Path = Path("./model_repo")
    """Model repository root (default ./model_repo). References come only from here, never from traffic."""

    models: Names = ("fraud",)
    """Comma-separated model names this service monitors (default `fraud`). Events for other models get a
    404, which keeps the `model` metric label bounded."""

    assume_version: str = Field("latest", pattern=r"^(|latest|v\d+)$")
    """Version to attribute events that do not name one (KServe V1 responses carry none). Default `latest`:
    the highest published version not rejected by its gates, looked up again every `REPO_POLL_INTERVAL_S`.
    Empty: such events are counted in `events_without_version_total` and not analysed."""

    repo_poll_interval_s: float = Field(30.0, gt=0, le=3600)
    """Seconds between looks at the model repo for a new latest version (default 30)."""

    spool_dir: Path = Path("./data/drift")
    """Directory of the SQLite stores (default ./data/drift): accepted events (spool + checkpoints) and
    predictions/labels. Use a persistent volume: it is what makes accepted events survive a restart."""

    durable: bool = True
    """fsync every commit (default true; SQLite synchronous=FULL): an accepted event survives a power loss,
    not only a process crash. Commits are grouped, so the cost is one fsync per burst, not per event."""

    max_backlog_rows: int = Field(200_000, ge=1_000, le=50_000_000)
    """Rows accepted but not yet analysed above which new events get 429 (default 200000, about 4 s of
    the 50k rows/s ingest goal): memory stays bounded, and the sender is told to back off, not ignored."""

    max_backlog_bytes: int = Field(128 * 2**20, ge=2**20, le=2**34)
    """Bytes of event bodies accepted but not yet analysed above which new events get 429 (default 128 MiB)."""

    max_body_bytes: int = Field(16 * 2**20, ge=2**10, le=2**30)
    """Largest request body (default 16 MiB, ~80k rows of 19 features); larger gets 413."""

    window_rows: int = Field(2000, ge=50, le=1_000_000)
    """Rows after which a window closes and is tested (default 2000). With the 5000-row reference this
    detects ~0.1-sigma shifts in one feature of twenty at alpha 0.05, while a window closes every 20 s at
    100 events/s."""

    window_seconds: float = Field(3600.0, gt=0, le=7 * 86400)
    """Seconds after which a window closes even if it has fewer than `WINDOW_ROWS` rows (default 3600), so
    a quiet model is still tested hourly."""

    min_window_rows: int = Field(200, ge=20, le=1_000_000)
    """A window closed by time with fewer rows is carried over instead of tested (default 200): below
    that the tests have little power and chi-square's expected counts get too small."""

    alpha: float = Field(0.05, gt=0, lt=0.5)
    """False-discovery rate of the per-window tests across features (Benjamini-Hochberg; default 0.05)."""

    skip_features: Names = DEFAULT_SKIPPED
    """Input columns not tested (default card_id, merchant_id: hashed ids with thousands of buckets, where
    chi-square has no power and a new card is not drift; hour_sin, hour_cos, is_night: they follow the clock,
    so any window shorter than a day differs from the reference by construction)."""

    alert_after_windows: int = Field(2, ge=1, le=100)
    """Consecutive drifted windows before a window-test alert (default 2): a lone false positive (rate alpha
    per window) does not page anyone; a real shift persists."""

    alert_min_psi: float = Field(0.05, ge=0, le=10)
    """A window counts towards a window-test alert only if a drifted feature also has PSI >= this (default
    0.05; 0 = any significant change). Significance answers "is it different?"; on real, clustered traffic
    (trips abroad, shopping sessions) tiny but real differences are significant in about one window in four
    (the simulator's `none` scenario: PSI 0.01-0.045), while the shifts worth a page have PSI 0.06-0.4.
    The per-window drift flags and metrics stay purely statistical."""

    alert_cooldown_s: float = Field(3600.0, ge=0, le=30 * 86400)
    """Seconds after an alert during which the same model, version and kind raise no new alert (default
    3600), so one shift is one alert."""

    alert_cloudevent_sinks: Names = ()
    """Comma-separated URLs that receive alerts as binary-mode CloudEvents (default none)."""

    alert_webhook_sinks: Names = ()
    """Comma-separated URLs that receive alerts as plain JSON POSTs (default none)."""

    alert_timeout_s: float = Field(2.0, gt=0, le=60)
    """Timeout in seconds of one alert delivery (default 2)."""

    alert_retries: int = Field(3, ge=0, le=20)
    """Retries of a failed alert delivery, with exponential backoff from 1 s (default 3)."""

    online_features: Names = DEFAULT_ONLINE
    """Columns fed to the online (per-row) detector (default: the numeric features that do not follow the
    clock). Not the probability: the model sees the hour, so its scores follow the clock even within an
    hour band, and the detector assumes rows that are alike when nothing changes (the simulator's `none`
    traffic raised 4 false alarms in 6000 rows with it, none without)."""

    online_ert: float = Field(10_000_000, ge=50, le=1e12)
    """Expected rows between false alarms of the online detector (default 10 million: about one a day at
    100 rows/s). Its threshold grows only with log(ERT), so a large ERT costs a few rows of delay."""

    online_k: float = Field(0.5, gt=0, le=3)
    """CUSUM reference value in standard units (default 0.5): tuned to shifts of about 2k = 1 sigma."""

    mmd_enabled: bool = True
    """Run the multivariate MMD test (alibi-detect, torch backend) on a schedule (default true)."""

    mmd_interval_s: float = Field(600.0, ge=1, le=86400)
    """Seconds between MMD runs per model version (default 600): MMD costs about a second of CPU once warm, the
    per-feature tests milliseconds; the first run also imports alibi-detect and torch (10-30 s of CPU, in the
    background: bench/e2e/cost.py saw it as one 13 CPU-second MMD run)."""

    mmd_rows: int = Field(1000, ge=50, le=20_000)
    """Reference and current rows used by MMD (default 1000 each, subsampled)."""

    mmd_permutations: int = Field(100, ge=20, le=10_000)
    """Permutations for the MMD p-value (default 100; resolution 0.01)."""

    label_window: int = Field(2000, ge=50, le=1_000_000)
    """Labelled predictions for ROC-AUC, PR-AUC and calibration: the newest by prediction time up to the label
    frontier, where every class's labels have come (default 2000)."""

    min_labels: int = Field(200, ge=10, le=1_000_000)
    """Labelled predictions needed before performance is computed (default 200)."""

    min_positives: int = Field(10, ge=1, le=100_000)
    """Positive labels needed before AUCs are computed (default 10; with ~2 % fraud, AUCs on fewer are noise)."""

    roc_auc_drop: float = Field(0.05, gt=0, le=1)
    """Alert when rolling ROC-AUC falls this far below the version's test ROC-AUC (default 0.05)."""

    pr_auc_drop: float = Field(0.15, gt=0, le=1)
    """Alert when rolling PR-AUC falls this far below the version's test PR-AUC (default 0.15)."""

    ece_rise: float = Field(0.05, gt=0, le=1)
    """Alert when rolling calibration error rises this far above the version's test ECE (default 0.05)."""

    prediction_store_rows: int = Field(5_000_000, ge=1_000, le=1_000_000_000)
    """Predictions kept on disk for the label join (default 5 million, ~0.5 GB): a week at ~8 rows/s;
    the oldest are deleted first, and a label for a deleted prediction counts as unknown."""

    max_pending_halves: int = Field(20_000, ge=10, le=10_000_000)
    """Request or response events waiting for their other half (matched by ce-id) (default 20000); past
    it the oldest is dropped and counted in `unpaired_events_total`."""

    pair_timeout_s: float = Field(60.0, gt=0, le=3600)
    """Seconds a half waits for its partner before it is dropped and counted (default 60)."""

    dedup_events: int = Field(100_000, ge=0, le=10_000_000)
    """CloudEvents remembered by (`ce-source`, `ce-id`, `ce-type`) so a sender's retry of one is acknowledged
    (202 `duplicate: true`) and counted in `duplicate_events_total` rather than analysed twice (default
    100000, about 20 MB; about 15 minutes of a 100 events/s logger). 0 turns it off. The oldest is forgotten
    first; the memory is the process's, rebuilt on start from the events the spool replays."""

    dedup_seconds: float = Field(3600.0, gt=0, le=7 * 86400)
    """Seconds (by arrival) an event id is remembered for deduplication (default 3600: KServe's logger and the
    transformer retry within seconds); whichever of this and `DEDUP_EVENTS` is reached first bounds it."""

    report_interval_s: float = Field(1.0, gt=0, le=3600)
    """Seconds between rebuilds of the report served by `GET /v1/report` (default 1). The analysis thread
    builds it between items while something changed; reading it never waits for ingestion, and it carries
    `computed_at` and `age_seconds`."""

    checkpoint_interval_s: float = Field(30.0, gt=0, le=3600)
    """Seconds between checkpoints of the analysis state (default 30); a restart replays only the events
    accepted after the last one, so it bounds both replay time and spool size."""

    history_points: int = Field(500, ge=10, le=100_000)
    """Window results kept per version for the report's plots (default 500)."""

    ingest_token_file: Path | None = None
    """File holding the drift ingest token (default unset). The CloudEvents intake (`POST /`, `/v1/events`)
    and `POST /v1/batch` need `Authorization: Bearer <token>`: whoever can write rows can make drift (or
    hide it). Unset, missing or empty: those routes answer 401 to everyone, closed rather than open by
    omission. Re-read when the file changes, so a rotated Secret takes effect without a restart."""

    labels_token_file: Path | None = None
    """File holding the drift labels token (default unset), the only credential `POST /v1/labels` accepts.
    Separate from the ingest token because the first label for a row wins: whoever can label can
    pre-empt the real chargeback. Unset, missing or empty: /v1/labels answers 401. Re-read on change."""

    skew_token_file: Path | None = None
    """File holding the drift skew token (default unset), the credential of the run-time skew check
    (`GET /v1/skew/sample`, which reveals served model inputs, and `POST /v1/skew`). Unset, missing or empty:
    both answer 401. Re-read on change."""

    skew_sample_rows: int = Field(1000, ge=0, le=MAX_SAMPLE_ROWS)
    """Served rows kept per version for the skew check (default 1000; 0 = none): a uniform sample of every
    row with a key, about 150 bytes each."""

    max_orphan_labels: int = Field(1_000_000, ge=100, le=100_000_000)
    """Labels kept waiting for a prediction that is not logged yet (default 1 million, ~100 MB on disk):
    beyond it the oldest are deleted first and counted in `evicted_orphan_labels_total`. Label ids are
    chosen by the caller, so without a cap only the 14-day expiry would bound them."""

    max_tracked_versions: int = Field(16, ge=1, le=10_000)
    """Model versions per service with analysis state in memory (monitor, loaded reference, load error)
    (default 16: stable, candidates and a few retired versions still draining). Only published versions
    are ever tracked; past the cap the least recently used is forgotten (counted in
    `evicted_versions_total`) and reloaded from the repository if its traffic returns."""

    @field_validator("models", "skip_features", "online_features", "alert_cloudevent_sinks",
                     "alert_webhook_sinks", mode="before")
    @classmethod
    def _split(cls, value: object) -> tuple[str, ...]:
        return _names(value)

    @field_validator("alert_cloudevent_sinks", "alert_webhook_sinks")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"http:// or https:// URLs separated by commas, got {url!r}")
        return value

    @field_validator("models")
    @classmethod
    def _some_model(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one model name")
        return value

    @model_validator(mode="after")
    def _windows_fit(self) -> Settings:
        if self.min_window_rows > self.window_rows:
            raise ValueError(f"MIN_WINDOW_ROWS ({self.min_window_rows}) <= WINDOW_ROWS ({self.window_rows})")
        return self

    @model_validator(mode="after")
    def _separate_credentials(self) -> Settings:
        if self.ingest_token_file is not None and self.ingest_token_file == self.labels_token_file:
            raise ValueError(f"INGEST_TOKEN_FILE and LABELS_TOKEN_FILE are both {self.ingest_token_file}: "
                             "writers of rows must not be able to label them; give each its own token file")
        if self.skew_token_file is not None and self.skew_token_file in (self.ingest_token_file,
                                                                           self.labels_token_file):
            raise ValueError(f"SKEW_TOKEN_FILE is {self.skew_token_file}, also the ingest or labels token: the "
                             "skew check reads served model inputs; give it its own token file")
        return self


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment (overrides win); raises ConfigError naming the bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(describe_setting_errors(e.errors(), ENV_PREFIX)) from e
