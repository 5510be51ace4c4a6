"""FLYWHEEL_PREDICTOR_FAST_PATH=false: KServe's own handlers call the model, and answer the same way.

The same server also pins auto variant selection end to end: the repo publishes int8 with a lower
recorded cpu_latency_us than fp32, so a CPU server must serve int8 and say so. A second version (bias
+2) is published after it started, for the version routing through KServe's data plane.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

import tiny_model
from conftest import Server, running_server
from tiny_model import DIM, reference

ROWS = np.random.default_rng(11).normal(size=(2, DIM)).astype(np.float32)
VARIANTS = {
    "fp32": {"file": "model.fp32.onnx", "published": True, "gate": {}, "cpu_latency_us": 240},
    "int8": {"file": "model.int8.onnx", "published": True, "gate": {}, "cpu_latency_us": 90},
    "fp16": {"file": "model.fp16.onnx", "published": False, "gate": {}},
}


@pytest.fixture(scope="module")
def kserve_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("int8_repo")
    tiny_model.publish(repo, variants=VARIANTS)
    with running_server(repo, tmp_path_factory.mktemp("logs"), {"FLYWHEEL_PREDICTOR_FAST_PATH": "false"}) as server:
        tiny_model.publish(repo, bias=2.0)
        yield server


def test_auto_variant_on_cpu_serves_the_fastest_published_variant(kserve_server: Server) -> None:
    line = next(line for line in kserve_server.output().splitlines() if "serving model=fraud" in line)
    assert "variant=int8" in line and "lowest recorded cpu_latency_us" in line
    metrics = httpx.get(f"{kserve_server.url}/metrics").text
    assert 'flywheel_predictor_model_info{model="fraud",provider="CPUExecutionProvider",variant="int8",version="v1"} 1.0' in metrics


def test_v1_through_kserve_handlers_matches_the_model(kserve_server: Server) -> None:
    response = httpx.post(f"{kserve_server.url}/v1/models/fraud:predict", json={"instances": ROWS.tolist()})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["predictions"], reference(ROWS), rtol=1e-5)


def test_v1_through_kserve_handlers_leaves_no_warning_in_the_log(kserve_server: Server) -> None:
    # KServe answers V1 with FastAPI's deprecated ORJSONResponse (see FlywheelRESTServer.create_application).
    response = httpx.post(f"{kserve_server.url}/v1/models/fraud:predict", json={"instances": ROWS.tolist()})
    assert response.status_code == 200
    assert "Warning" not in kserve_server.output()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary-tensor"])
def test_v2_through_kserve_handlers_matches_the_model(kserve_server: Server, binary: bool) -> None:
    tensor = InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)

    async def call():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as client:
            return await client.infer(kserve_server.url, InferRequest("fraud", [tensor]), model_name="fraud")

    np.testing.assert_allclose(asyncio.run(call()).outputs[0].as_numpy(), reference(ROWS), rtol=1e-5)


def test_v2_through_kserve_handlers_reports_the_model_version(kserve_server: Server) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, DIM], "datatype": "FP32", "data": ROWS[0].tolist()}]}
    response = httpx.post(f"{kserve_server.url}/v2/models/fraud/versions/v1/infer", json=body)
    assert response.status_code == 200
    assert response.json()["model_version"] == "v1"


@pytest.mark.parametrize(
    ("path", "headers", "body", "status"),
    [
        ("/v1/models/fraud:predict", {"content-type": "text/plain"}, json.dumps({"instances": [[0.0] * DIM]}), 415),
        ("/v1/models/fraud:predict", {"content-type": "application/json"}, json.dumps({"instances": [[0.0] * 3]}), 400),
        ("/v1/models/fraud:predict", {"content-type": "application/json; charset=utf-8"}, json.dumps({"instances": [[0.0] * DIM]}), 200),
        ("/v2/models/fraud/infer", {"content-type": "application/json"}, json.dumps({"inputs": []}), 400),
        ("/v2/models/fraud/infer", {"content-type": "application/json"}, '{"inputs": [', 400),
        ("/v2/models/fraud/infer", {"content-type": "application/json"}, json.dumps({"id": 3, "inputs": []}), 400),
    ],
)
def test_bad_requests_through_kserve_handlers_are_4xx(kserve_server: Server, path, headers, body, status) -> None:
    response = httpx.post(f"{kserve_server.url}{path}", headers=headers, content=body)
    assert response.status_code == status, response.text
    if status != 200:
        assert response.json()["error"]


def test_the_version_header_picks_the_version_through_kserve_handlers(kserve_server: Server) -> None:
    for headers, version, bias in [({"x-flywheel-model-version": "v2"}, "v2", 2.0), ({}, "v1", tiny_model.BIAS)]:
        response = httpx.post(f"{kserve_server.url}/v1/models/fraud:predict", json={"instances": ROWS.tolist()}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["x-flywheel-model-version"] == version
        np.testing.assert_allclose(response.json()["predictions"], reference(ROWS, bias), rtol=1e-5)


def test_versioned_v2_infer_through_kserve_handlers_scores_with_that_version(kserve_server: Server) -> None:
    body = {"inputs": [{"name": "input", "shape": [2, DIM], "datatype": "FP32", "data": ROWS.ravel().tolist()}]}
    response = httpx.post(f"{kserve_server.url}/v2/models/fraud/versions/v2/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "v2" and response.headers["x-flywheel-model-version"] == "v2"
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], reference(ROWS, 2.0).ravel(), rtol=1e-5)


def test_version_errors_through_kserve_handlers_are_json(kserve_server: Server) -> None:
    row = {"instances": ROWS.tolist()}
    response = httpx.post(f"{kserve_server.url}/v1/models/fraud:predict", json=row, headers={"x-flywheel-model-version": "two"})
    assert response.status_code == 400 and "x-flywheel-model-version" in response.json()["error"]
    response = httpx.post(f"{kserve_server.url}/v1/models/fraud:predict", json=row, headers={"x-flywheel-model-version": "v9"})
    assert response.status_code == 404 and "published: v1, v2" in response.json()["error"]
