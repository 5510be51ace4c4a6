"""Builders: a model repo with a synthetic published version, settings (with an ingest and a labels token
file), and a started service with an HTTP client (Starlette's TestClient, the real ASGI app and the real
SQLite stores). The client sends no credential; `Harness.writer` and `Harness.labeller` are the headers
of the two credential holders."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from flywheel_contracts.auth import TokenFile, write_token
from flywheel_core import model_repo, schema
from flywheel_drift import DriftService, Settings, create_app, load_settings

NAMES = [c["name"] for c in schema.COLUMNS]
NUMERIC = list(schema.NUMERIC_FEATURES)
CATEGORICAL = ["country", "merchant_category", "channel", "currency"]
TEST_METRICS = {"roc_auc": 0.9, "pr_auc": 0.5, "ece": 0.01}


def synthetic_rows(n: int, seed: int, shift: dict[str, float] | None = None, hour: int | None = None) -> np.ndarray:
    """Model-input rows: numeric features N(0, 1) (+ shift), realistic clock columns, small bucket ids."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, schema.INPUT_DIM), dtype=np.float32)
    for name in NUMERIC:
        x[:, NAMES.index(name)] = rng.standard_normal(n)
    hours = rng.integers(0, 24, n) if hour is None else np.full(n, hour)
    x[:, NAMES.index("hour_sin")] = np.sin(2 * math.pi * hours / 24)
    x[:, NAMES.index("hour_cos")] = np.cos(2 * math.pi * hours / 24)
    x[:, NAMES.index("is_night")] = hours < 6
    x[:, NAMES.index("card_id")] = rng.integers(1, 4096, n)
    x[:, NAMES.index("merchant_id")] = rng.integers(1, 1024, n)
    for name, k in zip(CATEGORICAL, (10, 8, 3, 6), strict=True):
        x[:, NAMES.index(name)] = rng.integers(1, k + 1, n)
    for name, delta in (shift or {}).items():
        x[:, NAMES.index(name)] += delta
    return x


def synthetic_probabilities(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).beta(1.0, 30.0, n).astype(np.float32)


def publish_version(repo: Path, rows: int = 3000, seed: int = 0, metrics: dict[str, Any] | None = None,
                    extra_files: dict[str, str] | None = None, state: bool = False,
                    gates: dict[str, Any] | None = None) -> Path:
    """Publish a synthetic version as the trainer does (metadata written last, digests recorded); `gates` is
    metadata.json's verdict (flywheel_core.model_repo.VersionGates), none by default."""
    staging = model_repo.staging_path(repo, "fraud")
    frame = pd.DataFrame(synthetic_rows(rows, seed), columns=NAMES)
    frame["probability"] = synthetic_probabilities(rows, seed)
    frame.to_parquet(staging / "drift_reference.parquet", index=False)
    for name, text in (extra_files or {}).items():
        (staging / name).write_text(text)
    if state:
        from flywheel_drift import compute_state, write_state

        write_state(staging, compute_state(staging, ert=300, k=0.5, online_features=("amount_log", "txn_count_1h"),
                                           simulate=True, streams=300))
    metadata = {
        "feature_service": schema.FEATURE_SERVICE,
        "input": {"name": "input", "datatype": "FP32", "shape": [-1, schema.INPUT_DIM], "columns": schema.COLUMNS},
        "output": {"name": "probability", "datatype": "FP32", "shape": [-1, 1]},
        "metrics": metrics if metrics is not None else {"torch": {"test": TEST_METRICS}},
        **({"gates": gates} if gates is not None else {}),
    }
    return model_repo.publish(staging, repo, "fraud", metadata)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"model_repo": tmp_path / "repo", "spool_dir": tmp_path / "spool", "durable": False,
                            "window_rows": 500, "min_window_rows": 100, "mmd_enabled": False,
                            "ingest_token_file": write_token(tmp_path / "tokens" / "drift-ingest"),
                            "labels_token_file": write_token(tmp_path / "tokens" / "drift-labels"),
                            "skew_token_file": write_token(tmp_path / "tokens" / "drift-skew")}
    return load_settings(**{**base, **overrides})


class Harness:
    """A started service and a client on its ASGI app."""

    def __init__(self, settings: Settings, alert_transport: Any = None) -> None:
        self.service = DriftService(settings, alert_transport=alert_transport)
        self.service.start()
        self.client = TestClient(create_app(self.service, start=False))
        self.writer = TokenFile(settings.ingest_token_file).header()
        """Headers of the drift ingest token's holder (the transformer)."""
        self.labeller = TokenFile(settings.labels_token_file).header()
        """Headers of the drift labels token's holder (whoever posts chargebacks)."""
        self.skewer = TokenFile(settings.skew_token_file).header()
        """Headers of the drift skew token's holder (the skew check)."""

    def batch(self, x: np.ndarray, probabilities: np.ndarray | None = None, ids: list[str] | None = None,
              **extra: Any) -> Any:
        body: dict[str, Any] = {"model": "fraud", "rows": x.tolist(), **extra}
        if probabilities is not None:
            body["probabilities"] = probabilities.tolist()
        if ids is not None:
            body["ids"] = ids
        return self.client.post("/v1/batch", json=body, headers=self.writer)

    def event(self, headers: dict[str, str], content: bytes, path: str = "/") -> Any:
        """Post a CloudEvent as the transformer does, with the ingest token."""
        return self.client.post(path, headers={**headers, **self.writer}, content=content)

    def labels(self, labels: list[dict[str, Any]]) -> Any:
        return self.client.post("/v1/labels", json={"labels": labels}, headers=self.labeller)

    def sync(self) -> None:
        assert self.service.sync(), "the processor did not catch up"

    def version(self) -> dict[str, Any]:
        self.sync()
        return self.client.get("/v1/report").json()["versions"][0]

    def close(self) -> None:
        self.service.stop()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    publish_version(path)
    return path


@pytest.fixture
def harness(tmp_path: Path, repo: Path) -> Iterator[Harness]:
    h = Harness(make_settings(tmp_path))
    yield h
    h.close()
