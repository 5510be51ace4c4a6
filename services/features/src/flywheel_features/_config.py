"""Settings of the features service, read once at start-up from FLYWHEEL_FEATURES_* variables.

The feature repository's feature_store.yaml expands ${FLYWHEEL_DATA_DIR}; `Settings.export_data_dir`
puts the resolved directory into the environment before Feast reads the file, so the service works
with the variable unset (default: ./data, where `make data` writes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import (
    AliasChoices,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel_contracts.admission import AdmissionSettings
from flywheel_core.settings import describe_setting_errors

from ._errors import ConfigError

ENV_PREFIX = "FLYWHEEL_FEATURES_"


# Admission control (MAX_IN_FLIGHT, MAX_WAITING, MAX_WAIT_MS, RETRY_AFTER_S, SHED_EXEMPT_PATHS), per worker: a lookup
# costs Feast's server about 1.2 ms of CPU (docs/benchmarks.md, online stores), so 32 in flight is ~40 ms of work;
# past 32 in flight and 32 waiting (for at most 50 ms) a request is answered 503 overloaded + Retry-After at once.
if TYPE_CHECKING:  # mypy cannot follow a class built at run time; its fields are AdmissionSettings'
    _Admission = AdmissionSettings
else:
    _Admission = AdmissionSettings.with_defaults(max_in_flight=32, max_waiting=32, max_wait_ms=50.0)


class Settings(BaseSettings, _Admission):
    """Every field: meaning, unit, default and why."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    repo_path: Path = Field(
        default=Path("feature_repo"),
        description="Feast feature repository directory (definitions + feature_store*.yaml). Default "
        "'feature_repo', relative to the working directory: the repository root for make and scripts/.",
    )
    store_yaml: str = Field(
        default="feature_store.yaml",
        description="File name, inside repo_path, of the environment's Feast config: 'feature_store.yaml' "
        "(local: SQLite + parquet) or 'feature_store.cluster.yaml' (Redis). Default local.",
    )
    data_dir: Path = Field(
        default=Path("data"),
        validation_alias=AliasChoices(f"{ENV_PREFIX}DATA_DIR", "FLYWHEEL_DATA_DIR"),
        description="Directory of the simulator's parquet tables and the local registry / online store "
        "(FLYWHEEL_DATA_DIR, shared with the other tools). Default ./data.",
    )
    host: str = Field(default="0.0.0.0", description="Interface to listen on. Default all (a container); "
                      "the local stack passes 127.0.0.1.")
    port: int = Field(default=6566, ge=1, le=65535, description="TCP port. Default 6566, Feast's usual port.")
    workers: int = Field(default=1, ge=1, le=64, description="Server processes. Default 1: the SQLite online "
                         "store gains nothing from more; with Redis, scale to the cores. Metrics are "
                         "aggregated across processes when > 1.")
    registry_ttl_seconds: int = Field(default=60, ge=0, le=86_400, description="Seconds between registry "
                                      "refreshes, so a new `apply` reaches a running server. Default 60; 0 = never.")
    feature_service: str = Field(default="fraud_v1", description="Feature service /ready must find in the "
                                 "registry. Default fraud_v1, the one the model is trained and served with.")
    log_level: str = Field(default="info", pattern="^(critical|error|warning|info|debug)$",
                           description="Server log level. Default info; no line is logged per request.")
    read_token_file: Path | None = Field(
        default=None,
        description="File holding the features read token (FLYWHEEL_FEATURES_READ_TOKEN_FILE, default unset). "
        "POST /get-online-features needs `Authorization: Bearer <token>`: the online store holds every "
        "card's velocity totals. Unset, missing or empty: reads answer 401 to everyone, closed rather than "
        "open by omission. Re-read when the file changes, so a rotated Secret needs no restart.",
    )
    write_token_file: Path | None = Field(
        default=None,
        description="File holding the features write token (FLYWHEEL_FEATURES_WRITE_TOKEN_FILE, default "
        "unset), the only credential /push, /write-to-online-store, /materialize and "
        "/materialize-incremental accept: whoever writes the online store sets the features the model "
        "scores with. Unset, missing or empty: writes answer 401. Re-read on change. It must not be the "
        "read token's file.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=64 * 1_048_576,
        description="Largest request body in bytes (default 1 MiB, 1024 to 64 MiB); a larger one gets a 413 "
        "before Feast parses any of it (Content-Length over the limit is refused unread, a chunked body as "
        "soon as it grows past it). The transformer's largest lookup (FLYWHEEL_TRANSFORMER_MAX_INSTANCES="
        "1000 entity rows of a card id and a merchant id, about 22 KB with the simulator's ids) fits with "
        "room to spare, and so does any lookup of a request under the transformer's own 1 MiB body limit, "
        "since a lookup repeats only two ids of each transaction. Raise it with those two limits.",
    )

    stream_flush_rows: int = Field(
        default=1000, ge=1, le=1_000_000,
        description="The stream step (POST /stream/transactions) writes its card_activity rows to the offline "
        "store as one parquet part per this many rows (default 1000), beside card_activity.parquet. Fewer means "
        "more small files for DuckDB to open; rows not yet written are in the stream log and written at "
        "shutdown or, after a crash, at the next start.",
    )
    stream_flush_s: float = Field(
        default=60.0, gt=0, le=86_400,
        description="Seconds (default 60) after which the stream step writes its unwritten rows as a part even "
        "below STREAM_FLUSH_ROWS, checked when transactions arrive, so training sees a quiet stream's rows "
        "within about this long.",
    )

    @field_validator("read_token_file", "write_token_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _separate_credentials(self) -> Settings:
        if self.read_token_file is not None and self.read_token_file == self.write_token_file:
            raise ValueError(f"READ_TOKEN_FILE and WRITE_TOKEN_FILE are both {self.read_token_file}: a reader "
                             "must not be able to write the online store; give each its own token file")
        return self

    @property
    def store_yaml_path(self) -> Path:
        return self.repo_path / self.store_yaml

    def export_data_dir(self) -> None:
        """Make ${FLYWHEEL_DATA_DIR} in feature_store.yaml resolve to this (absolute) directory."""
        os.environ["FLYWHEEL_DATA_DIR"] = str(self.data_dir.resolve())


def load_settings() -> Settings:
    """Read and check the settings; a bad value fails here, naming the variable."""
    try:
        settings = Settings()
    except ValidationError as e:
        raise ConfigError(describe_setting_errors(e.errors(), ENV_PREFIX)) from e
    if not settings.store_yaml_path.is_file():
        raise ConfigError(
            f"Config '{ENV_PREFIX}STORE_YAML' has value '{settings.store_yaml}': no such file "
            f"{settings.store_yaml_path} (check {ENV_PREFIX}REPO_PATH='{settings.repo_path}')"
        )
    return settings
