"""Typed settings, read once at start-up from `FLYWHEEL_CONTROLLER_*` environment variables.

A bad value stops the controller before it acts, with a message naming the variable.
"""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel_contracts.settings import describe_setting_errors

ENV_PREFIX = "FLYWHEEL_CONTROLLER_"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and says what is expected."""


class Settings(BaseSettings):
    """Every knob of the controller."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    namespace: str | None = Field(
        None,
        description="Namespace whose ModelRollouts this controller reconciles. Unset: the pod's own namespace "
        "(read from the service account mount).",
    )
    kubeconfig: Path | None = Field(
        None,
        description="Kubeconfig to reach the API server from outside a pod (a laptop, the tests). Unset: the "
        "in-cluster service account (KUBE_API_URL, KUBE_TOKEN_FILE, KUBE_CA_FILE).",
    )
    kube_api_url: str | None = Field(
        None, description="Kubernetes API base URL. Default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT."
    )
    kube_token_file: Path = Field(
        SERVICE_ACCOUNT_DIR / "token", description="Service account token, re-read on every request (it rotates)."
    )
    kube_ca_file: Path | None = Field(
        SERVICE_ACCOUNT_DIR / "ca.crt", description="CA bundle of the API server (None: the system's)."
    )
    router_admin_url: str = Field(
        "http://127.0.0.1:8001",
        pattern=r"^https?://[^\s/?#]+$",
        description="The router's admin API (routes are written here; also its statistics when ROUTER_SERVICE is "
        "unset).",
    )
    router_token_file: Path | None = Field(
        None, description="File with the router admin API's bearer token (the chart mounts its Secret)."
    )
    router_service: str | None = Field(
        None,
        description="The router's Service name: statistics are read from every ready replica found in its "
        "EndpointSlices (each replica counts its own traffic). Unset: ROUTER_ADMIN_URL only (one replica).",
    )
    router_admin_port: int = Field(8001, ge=1, le=65535, description="The admin port on each router replica.")
    drift_url: str | None = Field(
        None, description="The drift service (for `drift` metrics), e.g. http://flywheel-drift:8070. Unset: none."
    )
    prometheus_url: str | None = Field(
        None, description="Prometheus' HTTP API (for `prometheus` metrics), e.g. http://prometheus:9090. Unset: none."
    )
    model_repo: Path | None = Field(
        None,
        description="The model repository (read only: <repo>/<model>/<version>/metadata.json), to refuse a candidate "
        "published as rejected by its gates, or not published there, before any traffic moves. Unset: no gate check "
        "(local mode: --model-repo).",
    )
    leader_election: bool = Field(
        True, description="Act only while holding the Lease LEASE_NAME (several replicas: one acts, the rest wait)."
    )
    lease_name: str = Field("flywheel-controller", description="The Lease used for leader election.")
    lease_seconds: float = Field(15.0, gt=1, le=300, description="How long a Lease stays valid without renewal (s).")
    renew_seconds: float = Field(5.0, gt=0.1, le=100, description="How often the leader renews its Lease (s).")
    identity: str = Field(
        default_factory=socket.gethostname, description="This replica's name in the Lease (the pod name)."
    )
    http_host: str = Field("0.0.0.0", description="Address of the health and metrics port.")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics (0: none).")
    max_concurrent: int = Field(
        16, ge=1, le=1024, description="Rollouts reconciled at once (each waits on the router and the providers)."
    )
    resync_seconds: float = Field(
        30.0, gt=0, description="Every rollout is looked at again at least this often, even with no event (s)."
    )
    trainer_cronjob: str | None = Field(
        None,
        max_length=52,
        description="The trainer CronJob whose jobTemplate makes each RetrainPolicy's training Job (the chart sets "
        "its own). Unset: RetrainPolicies are not acted on. Needs MODEL_REPO, where the trained version is found.",
    )
    retrain_interval_s: float = Field(
        15.0, gt=0, le=3600, description="How often every RetrainPolicy is looked at (its triggers, its run) (s)."
    )


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        raise ConfigError(describe_setting_errors(e.errors(), ENV_PREFIX)) from e
