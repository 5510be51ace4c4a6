"""Every kind of bad request gets a 4xx with a JSON body naming the problem, never a 500.

The comment on each case says what stock KServe 0.21 answers for it (probed with a plain kserve.Model
around the same session; see README.md), which is why the case is here.
"""

from __future__ import annotations

import json
import struct

import httpx
import pytest

from tiny_model import DIM

V1 = "/v1/models/fraud:predict"
V2 = "/v2/models/fraud/infer"
JSON = {"content-type": "application/json"}
ROW = [0.5] * DIM


def v2(**tensor) -> str:
    return json.dumps({"inputs": [{"name": "input", "shape": [1, DIM], "datatype": "FP32", "data": ROW, **tensor}]})


def binary(header: dict, tail: bytes, length: int | str | None = None) -> tuple[dict, bytes]:
    head = json.dumps(header).encode()
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(length if length is not None else len(head))}
    return headers, head + tail


def binary_input(size: int) -> dict:
    return {"inputs": [{"name": "input", "shape": [1, DIM], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}


CASES = [
    # (id, path, headers, body, status, words the error must contain)
    ("v1-text-plain", V1, {"content-type": "text/plain"}, json.dumps({"instances": [ROW]}), 415, ["text/plain", "application/json"]),  # 500 TypeError
    ("v1-form-encoded", V1, {"content-type": "application/x-www-form-urlencoded"}, json.dumps({"instances": [ROW]}), 415, ["not JSON"]),  # 500
    ("v1-malformed-json", V1, JSON, '{"instances": [', 400, ["not valid JSON"]),  # 400
    ("v1-empty-body", V1, JSON, "", 400, ["empty"]),  # 400
    ("v1-nan-literal", V1, JSON, '{"instances": [[NaN]]}', 400, ["not valid JSON"]),  # 400
    ("v1-body-not-object", V1, JSON, json.dumps([ROW]), 400, ["'instances'"]),  # 500 TypeError
    ("v1-missing-instances", V1, JSON, json.dumps({"inputs": [ROW]}), 400, ["'instances'"]),  # 500 KeyError
    ("v1-instances-not-list", V1, JSON, json.dumps({"instances": 3}), 400, ["'instances'", "list"]),  # 500
    ("v1-no-rows", V1, JSON, json.dumps({"instances": []}), 400, ["non-empty"]),  # 500 ORT rank error
    ("v1-wrong-column-count", V1, JSON, json.dumps({"instances": [ROW[:-1]]}), 400, [f"{DIM} numbers", f"list of {DIM - 1}"]),  # 500 ORT
    ("v1-ragged-rows", V1, JSON, json.dumps({"instances": [ROW, ROW[:3]]}), 400, ["'instances[1]'"]),  # 500
    ("v1-row-not-list", V1, JSON, json.dumps({"instances": [5]}), 400, ["'instances[0]'"]),  # 500
    ("v1-string-value", V1, JSON, json.dumps({"instances": [["x", *ROW[1:]]]}), 400, ["numbers", "string"]),  # 500
    ("v1-numeric-string", V1, JSON, json.dumps({"instances": [["1.5", *ROW[1:]]]}), 400, ["string"]),  # 200: silently cast
    ("v1-boolean", V1, JSON, json.dumps({"instances": [[True, *ROW[1:]]]}), 400, ["boolean"]),  # 200: silently cast
    ("v1-null", V1, JSON, json.dumps({"instances": [[None, *ROW[1:]]]}), 400, ["null"]),  # 200 with a null prediction
    ("v1-beyond-fp32", V1, JSON, json.dumps({"instances": [[1e39, *ROW[1:]]]}), 400, ["FP32 range"]),  # 200 on inf
    ("v1-huge-integer", V1, JSON, '{"instances": [[' + "9" * 400 + "," + ",".join(["0"] * (DIM - 1)) + "]]}", 400, ["infinity"]),
    ("v2-text-plain", V2, {"content-type": "text/plain"}, v2(), 415, ["text/plain"]),  # 400, about a missing header
    ("v2-malformed-json", V2, JSON, '{"inputs": [', 400, ["not valid JSON"]),  # 422 {"detail": ...}
    ("v2-body-not-object", V2, JSON, "[1, 2]", 400, ["'inputs'"]),  # 422
    ("v2-no-inputs", V2, JSON, json.dumps({"inputs": []}), 400, ["exactly one"]),  # 500 IndexError
    ("v2-two-inputs", V2, JSON, json.dumps({"inputs": json.loads(v2())["inputs"] * 2}), 400, ["exactly one"]),  # 200: extra ignored
    ("v2-unknown-input-name", V2, JSON, v2(name="features"), 400, ["unknown input 'features'", "'input'"]),  # 200: name ignored
    ("v2-missing-input-name", V2, JSON, json.dumps({"inputs": [{"shape": [1, DIM], "datatype": "FP32", "data": ROW}]}), 400, ["no name"]),  # 422
    ("v2-wrong-dtype-fp64", V2, JSON, v2(datatype="FP64"), 400, ["'FP64'", "FP32"]),  # 500 ORT
    ("v2-wrong-dtype-int32", V2, JSON, v2(datatype="INT32"), 400, ["'INT32'"]),  # 500 ORT
    ("v2-wrong-dtype-bytes", V2, JSON, v2(datatype="BYTES", data=["a"] * DIM), 400, ["'BYTES'"]),  # 500 ORT
    ("v2-wrong-column-count", V2, JSON, v2(shape=[1, DIM - 1], data=ROW[:-1]), 400, ["shape", f"[n, {DIM}]"]),  # 500 ORT
    ("v2-one-dimensional-shape", V2, JSON, v2(shape=[DIM]), 400, ["shape"]),  # 500 ORT
    ("v2-data-shorter-than-shape", V2, JSON, v2(shape=[2, DIM]), 400, [f"needs {2 * DIM}"]),  # 500 reshape
    ("v2-nested-row-count", V2, JSON, v2(shape=[2, DIM], data=[ROW]), 400, ["1 rows", "shape says 2"]),
    ("v2-string-data", V2, JSON, v2(data=["x"] * DIM), 400, ["numbers", "string"]),  # 500
    ("v2-missing-data", V2, JSON, json.dumps({"inputs": [{"name": "input", "shape": [1, DIM], "datatype": "FP32"}]}), 400, ["data"]),  # 422
    ("v2-beyond-fp32", V2, JSON, v2(data=[1e39, *ROW[1:]]), 400, ["FP32 range"]),  # 200 on inf
    ("v2-id-not-string", V2, JSON, json.dumps({**json.loads(v2()), "id": 7}), 400, ["'id'"]),  # 422
    ("v2-unknown-output", V2, JSON, json.dumps({**json.loads(v2()), "outputs": [{"name": "logits"}]}), 400, ["unknown output 'logits'"]),  # 200
    ("v2-parameters-not-object", V2, JSON, json.dumps({**json.loads(v2()), "parameters": [1]}), 400, ["'parameters'"]),
]

BINARY_CASES = [
    ("binary-header-not-integer", *binary(binary_input(DIM * 4), struct.pack(f"<{DIM}f", *ROW), "abc"), 400, ["integer"]),  # 500 ValueError
    ("binary-header-beyond-body", *binary(binary_input(DIM * 4), b"", 10_000), 400, ["10000"]),
    ("binary-json-part-malformed", *binary(binary_input(DIM * 4), b"", 5), 400, ["not valid JSON"]),
    ("binary-no-inputs", *binary({}, b""), 400, ["'inputs'"]),  # 500 KeyError
    ("binary-size-wrong-for-shape", *binary(binary_input(8), struct.pack("<2f", 1, 2)), 400, ["binary_data_size 8", f"{DIM * 4} bytes"]),  # 500
    ("binary-tail-too-short", *binary(binary_input(DIM * 4), b"\0" * 8), 400, ["8 bytes"]),  # 500
    ("binary-nan", *binary(binary_input(DIM * 4), struct.pack(f"<{DIM}f", float("nan"), *ROW[1:])), 400, ["NaN"]),  # 200 NaN
]


@pytest.mark.parametrize(("path", "headers", "body", "status", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_is_4xx_naming_the_problem(client: httpx.Client, path, headers, body, status, words) -> None:
    response = client.post(path, headers=headers, content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    for word in words:
        assert word in error


@pytest.mark.parametrize(("headers", "body", "status", "words"), [c[1:] for c in BINARY_CASES], ids=[c[0] for c in BINARY_CASES])
def test_bad_binary_tensor_request_is_4xx_naming_the_problem(client: httpx.Client, headers, body, status, words) -> None:
    response = client.post(V2, headers=headers, content=body)
    assert response.status_code == status, response.text
    for word in words:
        assert word in response.json()["error"]


def test_missing_content_type_is_read_as_json_like_kserve_does(client: httpx.Client) -> None:
    response = client.post(V1, content=json.dumps({"instances": [ROW]}))
    assert response.status_code == 200


def test_json_with_charset_parameter_is_accepted(client: httpx.Client) -> None:
    # Stock KServe compares the whole header with "application/json" and hands the model raw bytes (500).
    response = client.post(V1, headers={"content-type": "application/json; charset=utf-8"}, content=json.dumps({"instances": [ROW]}))
    assert response.status_code == 200


@pytest.mark.parametrize("path", [V1, V2])
def test_get_on_an_inference_route_is_405(client: httpx.Client, path: str) -> None:
    # Stock KServe reads "fraud:predict" as a model name: 404 "Model with name fraud:predict does not exist".
    response = client.get(path)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert "POST" in response.json()["error"]


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    response = client.post(V1, headers=JSON, content=b" " * (8 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert "FLYWHEEL_PREDICTOR_MAX_BODY_BYTES" in response.json()["error"]


def test_unknown_model_is_404(client: httpx.Client) -> None:
    response = client.post("/v2/models/nope/infer", headers=JSON, content=v2())
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


def test_bad_requests_are_counted_by_status(client: httpx.Client) -> None:
    client.post(V1, headers={"content-type": "text/plain"}, content="x")
    text = client.get("/metrics").text
    assert 'flywheel_predictor_requests_total{code="415",model="fraud",protocol="v1",variant="fp32",version="v1"}' in text


def test_a_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    chunks = (b" " * (1024 * 1024) for _ in range(9))
    response = client.post(V1, headers=JSON, content=chunks)
    assert response.status_code == 413
