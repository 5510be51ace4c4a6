"""Typed trainer settings, read once at start-up from `FLYWHEEL_TRAINER_*` environment variables.

Command-line arguments (`--data`, `--epochs`, ...) override single fields when loading; nothing reads
the environment later. With every path in the environment, `python -m flywheel_trainer` alone trains
(what a Kubernetes Job runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel_contracts.skew import MAX_SAMPLE_ROWS
from flywheel_core.settings import describe_setting_errors

from ._errors import ConfigError


class TrainerSettings(BaseSettings):
    """Every knob of a training run; the defaults train the default-size data in about a minute."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_TRAINER_", extra="forbid", frozen=True)

    feature_repo: Path = Field(
        Path("feature_repo"),
        description="Feast repository directory (holds feature_store.yaml). Default ./feature_repo.",
    )
    feature_store_yaml: str = Field(
        "feature_store.yaml",
        description="Config file inside feature_repo; feature_store.cluster.yaml in a cluster. Default the local one.",
    )
    data_dir: Path = Field(
        Path("data"), description="Directory with transactions.parquet (and Feast's tables). Default ./data."
    )
    model_repo: Path = Field(
        Path("model_repo"),
        description="Model repository root; versions go to <model_repo>/<model>/vN. Default ./model_repo.",
    )
    model: str = Field(
        "fraud", pattern=r"^[a-z][a-z0-9_-]*$", description="Model name in the repository. Default fraud."
    )
    if_empty: bool = Field(
        False,
        description=(
            "Do nothing when the model already has a version (make up / a Job that must not retrain). Default false."
        ),
    )
    seed: int = Field(
        20261123, description="Seed of every random choice (init, batches, samples); same seed and data, same model."
    )
    threads: int = Field(2, ge=1, description="Torch intra-op threads. Default 2: the target machine has 2 cores.")
    epochs: int = Field(25, ge=1, description="Most training epochs; early stopping usually ends sooner. Default 25.")
    serve: Literal["auto", "torch", "baseline"] = Field(
        "auto",
        description="Which model the version serves: auto (the better on validation PR-AUC, a tie to the baseline), "
        "or torch / baseline whatever the metrics say (metrics.baseline_gate still records how it compares). "
        "Default auto.",
    )
    patience: int = Field(4, ge=1, description="Epochs without a better validation PR-AUC before stopping. Default 4.")
    batch_size: int = Field(
        512, ge=16, description="Rows per optimiser step. Default 512: large enough for stable gradients at ~1% fraud."
    )
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate. Default 3e-3.")
    weight_decay: float = Field(
        1e-5, ge=0, description="Adam L2 penalty; keeps the card embeddings from memorising. Default 1e-5."
    )
    embedding_dim: int = Field(
        8, ge=1, description="Width of each hashed-column embedding (halved buckets at most). Default 8."
    )
    hidden: int = Field(64, ge=4, description="Width of the first MLP layer; the second is half. Default 64.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after the first MLP layer. Default 0.1.")
    validation_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="Share of rows (by time) in validation. Default 0.15."
    )
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of rows (newest) in test. Default 0.15.")
    parity_atol: float = Field(
        1e-5, gt=0, description="Max abs probability difference fp32 ONNX vs torch on test. Default 1e-5."
    )
    gate_max_auc_diff: float = Field(
        0.005,
        gt=0,
        description="Max abs(ROC-AUC(variant) - ROC-AUC(fp32)) on test to publish a variant. Default 0.005.",
    )
    gate_max_probability_diff: float = Field(
        0.02, gt=0, description="Max abs probability difference variant vs fp32 on test. Default 0.02."
    )
    latency_warmup: int = Field(
        20, ge=0, description="Untimed runs before timing each variant and batch size. Default 20."
    )
    latency_repeats: int = Field(
        500, ge=1, description="Timed runs per variant and batch size; the median is recorded. Default 500."
    )
    latency_threads: int = Field(
        1, ge=1, description="onnxruntime intra-op threads while timing. Default 1: what one predictor worker uses."
    )
    int8_calibration_rows: int = Field(2048, ge=64, description="Training rows fed to INT8 calibration. Default 2048.")
    ece_bins: int = Field(
        15, ge=2, description="Equal-width probability bins of the expected calibration error. Default 15."
    )
    min_slice_rows: int = Field(
        200, ge=1, description="Slices with fewer test rows are skipped (metrics too noisy). Default 200."
    )
    min_slice_positives: int = Field(5, ge=1, description="Slices with fewer test frauds are skipped. Default 5.")
    pre_publish_command: str = Field(
        "",
        description="Command run before publishing, with the staging directory appended as its last argument; "
        "what it writes there is published and digested with the version. `make train` sets it to the drift "
        "service's `precompute` (its own environment), so detector state ships with the model. Default empty: none.",
    )
    stable_version: str = Field(
        "",
        pattern=r"^(|latest|v\d+)$",
        description="The version the candidate must beat before any traffic (gates on the test split, the newest "
        "labelled window): vN, or latest (the newest version not published as rejected; none yet: no comparison). "
        "A candidate that fails is published as rejected (exit 6). Default empty: no comparison, only the variants "
        "gate.",
    )
    window: str = Field(
        "",
        pattern=r"^$|^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$",
        description="Train only on transactions of the last WINDOW before the cut-off, a Go duration such as 720h "
        "(stateless retraining on a sliding window: a RetrainPolicy's training.window). Default empty: the whole "
        "history.",
    )
    warm_start: str = Field(
        "",
        pattern=r"^(|v\d+)$",
        description="Stateful retraining: fine-tune version vN's published torch weights (weights.torch.npz, "
        "verified) on this run's data (usually a short WINDOW of new data, few EPOCHS) instead of training from "
        "scratch; refused (exit 2) when its input columns or architecture differ. The baseline is refit on the "
        "window. Default empty: a cold start.",
    )
    run_id: str = Field(
        "",
        max_length=253,
        description="The run that asked for this version (the controller sets its trainer Job's name); recorded in "
        "the metadata's lineage.run, where the controller finds the version the Job published. Default empty.",
    )
    run_trigger: str = Field(
        "", max_length=64, description="What started the run (DriftAlert, Performance, Schedule, Manual); lineage only."
    )
    run_reason: str = Field("", max_length=1024, description="Why, in a sentence (lineage only). Default empty.")
    run_policy: str = Field("", max_length=253, description="The RetrainPolicy that started the run (lineage only).")
    gate_min_pr_auc_gain: float = Field(
        0.0,
        ge=-1,
        le=1,
        description="The lower end of the bootstrap CI of PR-AUC(candidate) - PR-AUC(stable) must be above this. "
        "Default 0.0: shown better, by any margin.",
    )
    gate_ci_level: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="Level of that two-sided percentile CI. Default 0.9 (the lower end is the 5th percentile).",
    )
    gate_bootstrap: int = Field(
        500,
        ge=50,
        description="Paired bootstrap resamples (frauds and legitimate rows apart), seeded by SEED. Default 500.",
    )
    gate_max_ece_increase: float = Field(
        0.02, ge=0, description="Most ECE(candidate) - ECE(stable) on test. Default 0.02."
    )
    gate_max_slice_pr_auc_drop: float = Field(
        0.05,
        ge=0,
        description="Most PR-AUC drop below the stable's in any slice with MIN_SLICE_ROWS rows and "
        "MIN_SLICE_POSITIVES frauds. Default 0.05.",
    )
    drift_reference_rows: int = Field(
        5000,
        ge=100,
        description="Held-out (validation + test) rows sampled into drift_reference.parquet. Default 5000.",
    )
    drift_url: str = Field(
        "",
        pattern=r"^(|https?://[^\s/?#]+(/[^\s?#]*)?)$",
        description="Base URL of the drift service the skew command reads its served-row sample from and posts its "
        "result to (GET /v1/report, GET /v1/skew/sample, POST /v1/skew), e.g. http://127.0.0.1:8083. Default empty: "
        "`skew` refuses to start (exit 2); `train` does not use it.",
    )
    skew_token_file: Path | None = Field(
        None,
        description="File holding the drift service's skew token (its FLYWHEEL_DRIFT_SKEW_TOKEN_FILE): the sample is "
        "model inputs, so both skew endpoints need it. Default none: `skew` refuses to start (exit 2).",
    )
    drift_ca_file: Path | None = Field(
        None,
        description="CA bundle (PEM) that verifies an https DRIFT_URL (the chart's ca.crt). Default none: the "
        "system's CAs.",
    )
    skew_version: str = Field(
        "",
        pattern=r"^(|v\d+)$",
        description="The version whose served rows `skew` checks (vN). Default empty: every version of MODEL the "
        "drift service's GET /v1/report lists.",
    )
    skew_limit: int = Field(
        500,
        ge=1,
        le=MAX_SAMPLE_ROWS,
        description=f"Most served rows `skew` asks for per version (at most {MAX_SAMPLE_ROWS}, the contract's cap): "
        "each costs one point-in-time row of the offline store. Default 500.",
    )

    @field_validator("skew_token_file", "drift_ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _splits_leave_training_rows(self) -> TrainerSettings:
        if self.validation_fraction + self.test_fraction >= 0.8:
            raise ValueError("validation_fraction + test_fraction must leave at least 20% of rows for training")
        return self


def load_settings(**overrides: Any) -> TrainerSettings:
    """Settings from the environment plus `overrides`; a bad value raises ConfigError naming it."""
    try:
        return TrainerSettings(**overrides)
    except ValidationError as e:
        raise ConfigError(describe_setting_errors(e.errors(), "FLYWHEEL_TRAINER_")) from e
