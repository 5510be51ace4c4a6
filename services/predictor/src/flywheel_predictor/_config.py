"""Typed settings, read once at start-up from `FLYWHEEL_PREDICTOR_*` environment variables.

A bad value stops the server before anything is loaded, with a message naming the variable, so a typo
in a Helm value or a shell never turns into a server that quietly serves the wrong thing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel_contracts.admission import AdmissionSettings
from flywheel_core.settings import describe_setting_errors

from ._errors import ConfigError

ENV_PREFIX = "FLYWHEEL_PREDICTOR_"
_VERSION_RE = re.compile(r"^(latest|v\d+)$")
_EXACT_VERSION_RE = re.compile(r"^v\d+$")

Variant = Literal["auto", "fp32", "fp16", "int8"]


# Admission control (MAX_IN_FLIGHT, MAX_WAITING, MAX_WAIT_MS, RETRY_AFTER_S, SHED_EXEMPT_PATHS), per worker.
# For single-row requests (the transformer's), which cost the loop 0.1-0.2 ms each on one core: 16 in flight
# is 2-3 ms of work queued, within the unloaded p99; a waiter waits at most 10 ms more. A request of 500 rows
# costs ~1.3 ms: there 16 is too many (bench/overload: p99 in seconds at 2x saturation) and 2 holds the p99;
# set MAX_IN_FLIGHT to (latency budget) / (CPU per request).
if TYPE_CHECKING:  # mypy cannot follow a class built at run time; its fields are AdmissionSettings'
    _Admission = AdmissionSettings
else:
    _Admission = AdmissionSettings.with_defaults(max_in_flight=16, max_waiting=16, max_wait_ms=10.0)


class Settings(BaseSettings, _Admission):
    """Every knob of the predictor. Provider and variant are chosen here and by detection, never in code."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    model_repo: Path = Field(
        Path("model_repo"),
        description="Directory of the model repository (<repo>/<model>/<version>/). Default ./model_repo, "
        "the path `make train` publishes into.",
    )
    model_name: str = Field(
        "fraud",
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Model to serve; also its name on every endpoint (/v1/models/<name>, /v2/models/<name>). "
        "Default 'fraud', the reference use case.",
    )
    model_version: str = Field(
        "latest",
        description="The default version, which answers every request that names none: 'latest' (highest "
        "published vN, resolved once at start-up and never moved afterwards, so a version published later "
        "takes no unrouted traffic) or an exact 'vN'. Default 'latest' so a fresh start picks up the newest "
        "published model.",
    )
    versions: str = Field(
        "default",
        description="Which versions besides the default to load: 'default' (none: other versions load on demand, "
        "when a request names them), 'all' (every published version at start-up, and each version published "
        "later as the repository poll sees it; none of them pinned), or a comma list such as 'v2,v3' (loaded "
        "at start-up, the server refusing to start if one cannot be, and pinned: never unloaded). "
        "Default 'default', one session per worker as before several versions existed.",
    )
    repo_poll_interval_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Seconds between looks at the model repository (new versions with VERSIONS=all) and at idle "
        "versions (UNLOAD_IDLE_S). Default 5: a listing of one directory, cheap enough to make a new version "
        "ready within seconds.",
    )
    unload_idle_s: float = Field(
        600.0,
        ge=0,
        description="Seconds without a request after which a version that is neither the default nor listed in "
        "VERSIONS is unloaded (session and inference threads closed, metric series retired). Default 600: a "
        "version the router stopped sending to gives its memory back within minutes; 0 never unloads.",
    )
    max_loaded_versions: int = Field(
        4,
        ge=1,
        le=64,
        description="Most versions (ONNX Runtime sessions) loaded at once per worker. Loading one more first "
        "unloads the least recently used version that is not pinned (the default and VERSIONS); if all are "
        "pinned the request gets 503. Default 4: stable, candidate and two more, bounded memory.",
    )
    load_retry_s: float = Field(
        30.0,
        ge=0,
        le=86400,
        description="Seconds a version whose load failed (tampered, missing file, tensors not as declared) is "
        "refused with 503 before a request may try loading it again. Default 30: the failure is logged once "
        "per try rather than once per request, and a repaired version is picked up within a minute.",
    )
    variant: Variant = Field(
        "auto",
        description="Which published ONNX file to run: auto | fp32 | fp16 | int8. 'auto' takes fp16 on a GPU "
        "provider when published, on CPU the published variant with the lowest recorded cpu_latency_us, "
        "else fp32.",
    )
    providers: str = Field(
        "auto",
        description="ONNX Runtime execution providers: 'auto' (the best available of TensorRT, CUDA, CPU) or a "
        "comma list such as 'CUDAExecutionProvider,CPUExecutionProvider'. Default auto, so one image serves "
        "on CPU and GPU nodes alike.",
    )
    http_host: str = Field(
        "0.0.0.0",
        description="Address to listen on. Default 0.0.0.0 so a pod is reachable; use 127.0.0.1 for local tests.",
    )
    http_port: int = Field(8080, ge=1, le=65535, description="HTTP port (KServe's default, 8080).")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes, each with its own ONNX Runtime session. Default 1: scale pods first; raise "
        "it to use several cores in one pod.",
    )
    intra_op_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="ONNX Runtime intra-op threads per session. Default 1: one core per worker, so workers do not "
        "fight over cores and a single-row request does not pay for thread wake-ups.",
    )
    inference_threads: int = Field(
        1,
        ge=0,
        le=64,
        description="Threads per worker that call session.run, off the event loop. Default 1 (one core per worker); "
        "raise it on GPU providers, where several runs can overlap. 0 runs the session on the event loop: "
        "cheaper for a model that scores a row in microseconds, but a slow batch then stalls every connection "
        "of the worker.",
    )
    batch_max_rows: int = Field(
        64,
        ge=1,
        le=65536,
        description="Most rows an inference thread stacks into one session.run from requests already waiting "
        "(it never waits for more). Default 64: under load one run serves many single-row requests; 1 turns "
        "stacking off.",
    )
    fast_path: bool = Field(
        True,
        description="Serve the hosted model's JSON inference routes from a small ASGI handler in front of KServe's "
        "app (same contract, a fraction of the per-request cost). Default on; off sends every request through "
        "KServe's own handlers, for comparison.",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest inference request body in bytes (413 beyond). Default 8 MiB, about 40k rows as JSON: "
        "bounds the memory one request can take.",
    )

    @field_validator("model_version")
    @classmethod
    def _version_form(cls, value: str) -> str:
        if not _VERSION_RE.match(value):
            raise ValueError("'latest' or a version such as 'v3'")
        return value

    @field_validator("versions")
    @classmethod
    def _versions_form(cls, value: str) -> str:
        value = value.strip()
        if value in ("default", "all"):
            return value
        names = [name.strip() for name in value.split(",")]
        if not all(_EXACT_VERSION_RE.match(name) for name in names):
            raise ValueError("'default', 'all' or a comma list of versions such as 'v2,v3'")
        return ",".join(dict.fromkeys(names))

    @field_validator("max_loaded_versions")
    @classmethod
    def _room_for_pinned(cls, value: int, info: ValidationInfo) -> int:
        versions, default = info.data.get("versions"), info.data.get("model_version")
        if versions == "all" and value < 2:
            raise ValueError("at least 2 with VERSIONS=all: the default and one more")
        if versions and versions not in ("default", "all") and default:
            listed = set(versions.split(","))
            # 'latest' may turn out to be one of the listed versions; start-up checks again once it is resolved.
            pinned = len(listed) if default == "latest" else len(listed | {default})
            if value < pinned:
                raise ValueError(f"at least {pinned}: the default and VERSIONS={versions} stay loaded")
        return value

    @field_validator("providers")
    @classmethod
    def _providers_form(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",")]
        if value.strip() == "auto":
            return "auto"
        if not all(names) or "auto" in names:
            raise ValueError("'auto' or a comma list of execution provider names")
        return ",".join(names)

    @property
    def listed_versions(self) -> tuple[str, ...]:
        """The versions VERSIONS lists (pinned); empty for 'default' and 'all'."""
        return () if self.versions in ("default", "all") else tuple(self.versions.split(","))

    @property
    def load_all(self) -> bool:
        """VERSIONS=all: load every published version, including those published while running."""
        return self.versions == "all"

    @property
    def provider_list(self) -> tuple[str, ...] | None:
        """The explicit provider list, or None for auto."""
        return None if self.providers == "auto" else tuple(self.providers.split(","))


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; a bad value raises ConfigError naming the environment variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(describe_setting_errors(e.errors(), ENV_PREFIX)) from e
