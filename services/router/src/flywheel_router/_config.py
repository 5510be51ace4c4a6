"""Typed settings, read once at start-up from `FLYWHEEL_ROUTER_*` environment variables.

A bad value stops the router before it listens, with a message naming the variable.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel_contracts.admission import AdmissionSettings
from flywheel_contracts.settings import describe_setting_errors

from ._errors import ConfigError

ENV_PREFIX = "FLYWHEEL_ROUTER_"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


# Admission control of the inference port (MAX_IN_FLIGHT, MAX_WAITING, MAX_WAIT_MS, RETRY_AFTER_S,
# SHED_EXEMPT_PATHS). A routed request mostly waits on its upstream, so the router holds many: 256 in flight,
# as many upstream connections as MAX_CONNECTIONS allows; past that, waiting only lengthens every answer.
if TYPE_CHECKING:  # mypy cannot follow a class built at run time; its fields are AdmissionSettings'
    _Admission = AdmissionSettings
else:
    _Admission = AdmissionSettings.with_defaults(max_in_flight=256, max_waiting=256, max_wait_ms=100.0)


class Settings(BaseSettings, _Admission):
    """Every knob of the router."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    http_host: str = Field(
        "0.0.0.0",
        description="Address of the inference port. Default 0.0.0.0 so a pod is reachable; 127.0.0.1 locally.",
    )
    http_port: int = Field(8000, ge=1, le=65535, description="Inference port: KServe V1/V2, health, /metrics.")
    admin_host: str = Field(
        "0.0.0.0", description="Address of the admin port (routes, stats). Default 0.0.0.0; 127.0.0.1 locally."
    )
    admin_port: int = Field(
        8001, ge=1, le=65535, description="Admin API port, separate so a NetworkPolicy can admit only the controller."
    )
    token_file: Path | None = Field(
        None,
        description="File holding the admin API's bearer token (a mounted Secret). Unset: the admin API refuses "
        "every request (401), so a router is never writable by accident.",
    )
    default_upstream: str = Field(
        "http://127.0.0.1:8090",
        pattern=r"^https?://[^\s/?#]+$",
        description="Base URL of the transformer pool that serves every version without its own endpoint; the "
        "version goes in the x-flywheel-model-version header.",
    )
    route_source: Literal["file", "configmap"] = Field(
        "file",
        description="Where routes live: 'file' (ROUTES_FILE; local) or 'configmap' (KUBE_CONFIGMAP, watched "
        "through the Kubernetes API; the chart's choice, so every replica follows one source).",
    )
    routes_file: Path = Field(Path("routes.json"), description="The route file of the 'file' source.")
    route_poll_interval_s: float = Field(
        0.25, gt=0, le=1, description="How often the 'file' source looks for a change (s); <= 1 s by contract."
    )
    kube_configmap: str = Field(
        "flywheel-routes", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", description="ConfigMap holding the routes."
    )
    kube_namespace: str | None = Field(
        None, description="Namespace of the ConfigMap. Default: the pod's own (from its service account)."
    )
    kube_api_url: str | None = Field(
        None,
        description="Kubernetes API base URL. Default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.",
    )
    kube_token_file: Path = Field(
        SERVICE_ACCOUNT_DIR / "token", description="Service account token (re-read on every reconnect: it rotates)."
    )
    kube_ca_file: Path | None = Field(
        SERVICE_ACCOUNT_DIR / "ca.crt", description="CA bundle of the API server; None trusts the system store."
    )
    upstream_client: Literal["h1", "httpx"] = Field(
        "h1",
        description="HTTP client to the upstreams: 'h1' (the router's lean HTTP/1.1 client on httptools; "
        "bench/router measures it against httpx) or 'httpx'. Both give the same timeouts, failures and pooling.",
    )
    connect_timeout_s: float = Field(
        1.0, gt=0, le=60, description="Connecting to an upstream (s). Short: a dead candidate is retried on the stable."
    )
    upstream_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Whole upstream answer (s) before a 503 (or the retry on the stable)."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body (413 beyond). Default 8 MiB, as the predictor."
    )
    max_connections: int = Field(
        256, ge=1, le=10000, description="Keep-alive connections per upstream; more concurrent requests wait for one."
    )
    shadow_queue_size: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Mirrored requests waiting for a shadow worker; when full, new copies are dropped and counted "
        "(never delaying the caller).",
    )
    shadow_workers: int = Field(8, ge=1, le=256, description="Concurrent requests to the shadow candidate.")
    shadow_timeout_s: float = Field(
        2.0, gt=0, le=60, description="A shadow answer slower than this is a candidate error."
    )
    decision_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Score at or above which an answer counts as a decline when the upstream does not say its "
        "decisions (a predictor's V2 answer); the transformer's own decisions are used when present.",
    )
    replica_name: str = Field(
        default_factory=socket.gethostname, description="This replica's name in stats (default: the host name)."
    )

    @field_validator("default_upstream")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; a bad value raises ConfigError naming the environment variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(describe_setting_errors(e.errors(), ENV_PREFIX)) from e
