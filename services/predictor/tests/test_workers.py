"""WORKERS=2: kserve's multi-process server spawns two workers, each with its own session (and its own
set of versions), and /metrics adds up the samples of both."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import tiny_model
from conftest import Server, running_server
from tiny_model import DIM, reference

REQUESTS = 40


@pytest.fixture(scope="module")
def two_workers(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    own = tmp_path_factory.mktemp("workers") / "model_repo"
    shutil.copytree(repo, own)
    with running_server(own, tmp_path_factory.mktemp("logs"), {"FLYWHEEL_PREDICTOR_WORKERS": "2"}) as server:
        tiny_model.publish(own, bias=2.0)  # v2, after start: each worker loads it on demand
        yield server


def test_two_workers_start(two_workers: Server) -> None:
    assert two_workers.output().count("Started child process") == 2


def test_two_workers_serve_v1_and_v2_under_concurrent_load(two_workers: Server) -> None:
    rows = np.random.default_rng(3).normal(size=(REQUESTS, DIM)).astype(np.float32)

    def one(i: int) -> float:
        with httpx.Client(base_url=two_workers.url, timeout=10) as client:  # new connection: either worker
            if i % 2:
                return client.post("/v1/models/fraud:predict", json={"instances": [rows[i].tolist()]}).json()["predictions"][0][0]
            body = {"inputs": [{"name": "input", "shape": [1, DIM], "datatype": "FP32", "data": rows[i].tolist()}]}
            return client.post("/v2/models/fraud/infer", json=body).json()["outputs"][0]["data"][0]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(REQUESTS)))
    np.testing.assert_allclose(results, reference(rows).ravel(), rtol=1e-5)

    metrics = httpx.get(f"{two_workers.url}/metrics").text
    rows_line = next(line for line in metrics.splitlines() if line.startswith("flywheel_predictor_rows_total{"))
    assert float(rows_line.rsplit(" ", 1)[1]) == REQUESTS


def test_each_worker_loads_a_named_version_on_demand(two_workers: Server) -> None:
    rows = np.random.default_rng(4).normal(size=(1, DIM)).astype(np.float32)

    def one(_: int) -> tuple[str, float]:
        with httpx.Client(base_url=two_workers.url, timeout=20) as client:  # new connection: either worker
            response = client.post("/v1/models/fraud:predict", json={"instances": rows.tolist()}, headers={"x-flywheel-model-version": "v2"})
            return response.headers["x-flywheel-model-version"], response.json()["predictions"][0][0]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(24)))
    assert {version for version, _ in results} == {"v2"}
    np.testing.assert_allclose([p for _, p in results], np.repeat(reference(rows, 2.0).ravel(), 24), rtol=1e-5)
    loads = [line for line in two_workers.output().splitlines() if "loaded model=fraud version=v2 " in line]
    assert 1 <= len(loads) <= 2  # at most once per worker
