"""The predictor, serving the model the trainer just published, through the official KServe client."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from flywheel_core import schema


def base_url(ports) -> str:
    return f"http://127.0.0.1:{ports.predictor}"


def rows(n: int = 3) -> list[list[float]]:
    vector = schema.vectorize([{"amount_log": 4.0, "card_id": "c000001", "country": "DE", "channel": "ecom"}])[0]
    return [vector] * n


def run(coro):
    return asyncio.run(coro)


async def _infer(config: RESTConfig, url: str, data):
    async with InferenceRESTClient(config) as client:
        return await client.infer(url, data, model_name="fraud")


def test_v1_client_predicts_one_probability_per_instance(stack, ports):
    result = run(_infer(RESTConfig(protocol="v1"), base_url(ports), {"instances": rows(3)}))
    predictions = np.asarray(result["predictions"], dtype=float).reshape(3, -1)
    assert ((predictions >= 0) & (predictions <= 1)).all()


def test_v2_client_returns_one_probability_per_row(stack, ports):
    infer_input = InferInput(name=schema.INPUT_NAME, shape=[2, schema.INPUT_DIM], datatype="FP32")
    infer_input.set_data_from_numpy(np.asarray(rows(2), dtype=np.float32))
    response = run(_infer(RESTConfig(protocol="v2"), base_url(ports), InferRequest(model_name="fraud", infer_inputs=[infer_input])))
    [output] = response.outputs
    assert output.name == schema.OUTPUT_NAME
    assert output.as_numpy().reshape(-1).shape == (2,)


def test_v2_response_names_the_served_model_version(stack, ports):
    # Checked over plain HTTP: kserve 0.21's InferResponse.from_bytes drops `model_version`.
    body = {"inputs": [{"name": schema.INPUT_NAME, "shape": [1, schema.INPUT_DIM], "datatype": "FP32", "data": rows(1)[0]}]}
    response = httpx.post(f"{base_url(ports)}/v2/models/fraud/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "v1"


def test_v2_client_sees_server_and_model_ready(stack, ports):
    async def check():
        async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
            return (
                await client.is_server_live(base_url(ports)),
                await client.is_server_ready(base_url(ports)),
                await client.is_model_ready(base_url(ports), "fraud"),
            )

    assert run(check()) == (True, True, True)


def test_wrong_column_count_is_a_client_error_naming_the_shape(stack, ports):
    with pytest.raises(httpx.HTTPStatusError) as raised:
        run(_infer(RESTConfig(protocol="v1"), base_url(ports), {"instances": [[1.0, 2.0]]}))
    assert 400 <= raised.value.response.status_code < 500
    assert "19" in raised.value.response.text
