"""The served endpoints, through httpx and through KServe's own Python client, against a real server."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tiny_model import DIM, reference

ROWS = np.random.default_rng(7).normal(size=(3, DIM)).astype(np.float32) * 5


def v2_body(rows: np.ndarray, **extra) -> dict:
    return {
        "inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}],
        **extra,
    }


def test_v1_predict_returns_one_probability_per_row(client: httpx.Client) -> None:
    response = client.post("/v1/models/fraud:predict", json={"instances": ROWS[:1].tolist()})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    predictions = response.json()["predictions"]
    np.testing.assert_allclose(predictions, reference(ROWS[:1]), rtol=1e-5)


def test_v1_predict_scores_a_batch_in_order(client: httpx.Client) -> None:
    response = client.post("/v1/models/fraud:predict", json={"instances": ROWS.tolist()})
    np.testing.assert_allclose(response.json()["predictions"], reference(ROWS), rtol=1e-5)


def test_v2_infer_returns_probability_output_with_model_version_and_request_id(client: httpx.Client) -> None:
    response = client.post("/v2/models/fraud/infer", json=v2_body(ROWS[:1], id="req-1"))
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "fraud"
    assert body["model_version"] == "v1"
    assert body["id"] == "req-1"
    (output,) = body["outputs"]
    assert (output["name"], output["shape"], output["datatype"]) == ("probability", [1, 1], "FP32")
    np.testing.assert_allclose(output["data"], reference(ROWS[:1]).ravel(), rtol=1e-5)


def test_v2_infer_generates_an_id_when_the_request_has_none(client: httpx.Client) -> None:
    first = client.post("/v2/models/fraud/infer", json=v2_body(ROWS[:1])).json()["id"]
    second = client.post("/v2/models/fraud/infer", json=v2_body(ROWS[:1])).json()["id"]
    assert first and second and first != second


def test_v2_infer_accepts_data_nested_by_row(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "input", "shape": [3, DIM], "datatype": "FP32", "data": ROWS.tolist()}]}
    output = client.post("/v2/models/fraud/infer", json=body).json()["outputs"][0]
    np.testing.assert_allclose(output["data"], reference(ROWS).ravel(), rtol=1e-5)


def test_v2_versioned_infer_route_serves_the_hosted_version(client: httpx.Client) -> None:
    response = client.post("/v2/models/fraud/versions/v1/infer", json=v2_body(ROWS))
    assert response.status_code == 200
    assert response.json()["outputs"][0]["shape"] == [3, 1]


def test_kserve_client_v1_infer(server) -> None:
    async def call() -> dict:
        async with InferenceRESTClient(RESTConfig(protocol="v1", retries=0)) as kclient:
            return await kclient.infer(server.url, {"instances": ROWS.tolist()}, model_name="fraud")

    np.testing.assert_allclose(asyncio.run(call())["predictions"], reference(ROWS), rtol=1e-5)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary-tensor"])
def test_kserve_client_v2_infer(server, binary: bool) -> None:
    tensor = InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)
    request = InferRequest(model_name="fraud", infer_inputs=[tensor], request_id="kc-1")

    async def call():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as kclient:
            return await kclient.infer(server.url, request, model_name="fraud")

    response = asyncio.run(call())
    # kserve 0.21's client drops model_version when it parses a response (InferResponse.from_bytes);
    # the httpx tests check that the server sends it.
    assert response.id == "kc-1"
    np.testing.assert_allclose(response.outputs[0].as_numpy(), reference(ROWS), rtol=1e-5)


def test_kserve_client_v2_binary_output_on_request(server) -> None:
    tensor = InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=True)
    request = InferRequest(model_name="fraud", infer_inputs=[tensor], parameters={"binary_data_output": True})

    async def call():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as kclient:
            return await kclient.infer(server.url, request, model_name="fraud")

    np.testing.assert_allclose(asyncio.run(call()).outputs[0].as_numpy(), reference(ROWS), rtol=1e-5)


def test_v2_binary_output_has_the_inference_header_and_raw_fp32(client: httpx.Client) -> None:
    response = client.post("/v2/models/fraud/infer", json=v2_body(ROWS, parameters={"binary_data_output": True}))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:length])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 4 * len(ROWS)}
    np.testing.assert_allclose(np.frombuffer(response.content[length:], "<f4"), reference(ROWS).ravel(), rtol=1e-5)


def test_kserve_client_health_and_readiness(server) -> None:
    async def call() -> tuple:
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as v2, InferenceRESTClient(
            RESTConfig(protocol="v1", retries=0)
        ) as v1:
            return (
                await v2.is_server_live(server.url),
                await v2.is_server_ready(server.url),
                await v2.is_model_ready(server.url, "fraud"),
                await v1.is_model_ready(server.url, "fraud"),
            )

    assert asyncio.run(call()) == (True, True, True, True)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/health/live", {"live": True}),
        ("/v2/health/ready", {"ready": True}),
        ("/v2/models/fraud/ready", {"name": "fraud", "ready": True}),
        ("/v2/models/fraud/versions/v1/ready", {"name": "fraud", "ready": True}),
        ("/v1/models", {"models": ["fraud"]}),
        ("/v1/models/fraud", {"name": "fraud", "ready": True}),
    ],
)
def test_health_and_readiness_routes(client: httpx.Client, path: str, expected: dict) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == expected


@pytest.mark.parametrize("path", ["/v2/models/fraud", "/v2/models/fraud/versions/v1"])
def test_model_metadata_shows_tensors_from_metadata_json_and_the_version(client: httpx.Client, path: str) -> None:
    metadata = client.get(path).json()
    assert metadata["name"] == "fraud"
    assert metadata["versions"] == ["v1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, DIM]}]
    assert metadata["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1, 1]}]


def test_an_unpublished_version_is_404_listing_the_published_ones(client: httpx.Client) -> None:
    for path in ("/v2/models/fraud/versions/v9", "/v2/models/fraud/versions/v9/ready"):
        response = client.get(path)
        assert response.status_code == 404
        assert "'v9'" in response.json()["error"] and "published: v1" in response.json()["error"]
    response = client.post("/v2/models/fraud/versions/v9/infer", json=v2_body(ROWS[:1]))
    assert response.status_code == 404
    assert "published: v1" in response.json()["error"]


def test_metrics_count_requests_and_latency_per_model_version_and_variant(client: httpx.Client) -> None:
    client.post("/v1/models/fraud:predict", json={"instances": ROWS[:1].tolist()})
    client.post("/v2/models/fraud/infer", json=v2_body(ROWS[:1]))
    text = client.get("/metrics").text
    labels = 'model="fraud",protocol="v1",variant="fp32",version="v1"'
    assert f'flywheel_predictor_requests_total{{code="200",{labels}}}' in text
    assert f"flywheel_predictor_request_seconds_count{{{labels}}}" in text
    assert 'flywheel_predictor_inference_seconds_count{model="fraud",variant="fp32",version="v1"}' in text
    assert 'flywheel_predictor_model_info{model="fraud",provider="CPUExecutionProvider",variant="fp32",version="v1"} 1.0' in text


def test_no_log_line_per_request(server, client: httpx.Client) -> None:
    before = server.output().count("\n")
    for _ in range(5):
        client.post("/v1/models/fraud:predict", json={"instances": ROWS[:1].tolist()})
        client.post("/v2/models/fraud/infer", json={"inputs": []})
        client.get("/v2/models/nope")
    assert server.output().count("\n") == before


def test_start_up_logs_one_line_saying_what_was_chosen_and_why(server) -> None:
    lines = [line for line in server.output().splitlines() if "serving model=fraud" in line]
    assert len(lines) == 1
    assert "variant=fp32" in lines[0] and "provider=CPUExecutionProvider" in lines[0]
    assert "providers=auto" in lines[0] and "variant=auto" in lines[0]


def test_a_chunked_request_body_is_read_whole(client: httpx.Client) -> None:
    body = json.dumps({"instances": ROWS.tolist()}).encode()
    chunks = (body[i : i + 100] for i in range(0, len(body), 100))  # no content-length: chunked encoding
    response = client.post("/v1/models/fraud:predict", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["predictions"], reference(ROWS), rtol=1e-5)
