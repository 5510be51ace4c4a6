"""Attacks on a real transformer process, each refused: model management, oversized bodies, reading model
inputs, and the credentials it must send to the feature service and the drift intake."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conftest import publish_version, transaction
from servers import CloudEventSink, FeatureServerStub, PredictorStub, TransformerProcess

FEATURES_TOKEN = "features-read-secret"
INGEST_TOKEN = "drift-ingest-secret"
MAX_BODY_BYTES = 16_384


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("security")
    publish_version(path / "model_repo")
    (path / "features-read").write_text(FEATURES_TOKEN + "\n")
    (path / "drift-ingest").write_text(INGEST_TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def features():
    with FeatureServerStub(token=FEATURES_TOKEN) as stub:
        yield stub


@pytest.fixture(scope="module")
def sink():
    with CloudEventSink(token=INGEST_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def transformer(workdir, features, sink):
    """DEBUG_FEATURES left at its default (off); tokens for both services it calls; a small body limit."""
    with PredictorStub() as predictor:
        env = {
            "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(workdir / "model_repo"),
            "FLYWHEEL_TRANSFORMER_FEATURES_URL": features.url,
            "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": predictor.url,
            "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": sink.url + "/",
            "FLYWHEEL_TRANSFORMER_FEATURES_TOKEN_FILE": str(workdir / "features-read"),
            "FLYWHEEL_TRANSFORMER_EVENT_TOKEN_FILE": str(workdir / "drift-ingest"),
            "FLYWHEEL_TRANSFORMER_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "FLYWHEEL_TRANSFORMER_HTTP_HOST": "127.0.0.1",
        }
        with TransformerProcess(env, workdir / "transformer.log") as process:
            yield process


# Routes: model management is not served


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v2/repository/models/fraud/unload", 404),
        ("POST", "/v2/repository/models/fraud/load", 404),
        ("POST", "/v2/repository/index", 404),
        ("POST", "/v1/models/fraud:explain", 405),  # matches GET /v1/models/{model_name}, with the name "fraud:explain"
        ("GET", "/openapi.json", 404),
        ("GET", "/docs", 404),
        ("POST", "/openai/v1/chat/completions", 404),
    ],
)
def test_a_route_that_is_not_served_is_a_json_error(transformer, method, path, status):
    response = httpx.request(method, f"{transformer.url}{path}")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert path in response.json()["error"]
    if status == 404:
        assert response.json()["type"] == "not_found"


def test_unload_changes_nothing_the_model_stays_ready_and_predicts(transformer):
    assert httpx.post(f"{transformer.url}/v2/repository/models/fraud/unload").status_code == 404
    assert httpx.get(f"{transformer.url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{transformer.url}/v2/models/fraud/ready").json()["ready"] is True
    assert transformer.predict([transaction()]).status_code == 200


@pytest.mark.parametrize(
    "path", ["/", "/v2/health/live", "/v2/health/ready", "/v1/models", "/v2/models", "/v2/models/fraud", "/metrics"]
)
def test_health_metadata_and_metrics_stay_open(transformer, path):
    assert httpx.get(f"{transformer.url}{path}").status_code == 200


def test_server_metadata_lists_no_extension(transformer):
    assert httpx.get(f"{transformer.url}/v2").json()["extensions"] == []


# Body limit: refused before parsing


def test_a_content_length_over_the_limit_is_413_naming_it(transformer):
    body = b'{"instances": [' + b" " * MAX_BODY_BYTES + b"]}"
    response = httpx.post(
        f"{transformer.url}/v1/models/fraud:predict", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413, response.text
    answer = response.json()
    assert (answer["type"], answer["limit_bytes"]) == ("body_too_large", MAX_BODY_BYTES)
    assert "FLYWHEEL_TRANSFORMER_MAX_BODY_BYTES" in answer["error"]


def test_a_chunked_body_growing_past_the_limit_is_413(transformer):
    chunks = (b" " * 4096 for _ in range(MAX_BODY_BYTES // 4096 + 2))  # no Content-Length: Transfer-Encoding chunked
    response = httpx.post(
        f"{transformer.url}/v1/models/fraud:predict", content=chunks, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["limit_bytes"] == MAX_BODY_BYTES


def test_a_chunked_body_within_the_limit_is_scored(transformer):
    body = httpx.Request("POST", "http://x", json={"instances": [transaction()]}).content
    response = httpx.post(
        f"{transformer.url}/v1/models/fraud:predict",
        content=iter([body[:50], body[50:]]),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


# Debug features: off by default


def test_with_debug_features_off_the_header_is_ignored(transformer):
    response = transformer.predict(
        [transaction()], headers={"x-flywheel-debug-features": "1", "authorization": "Bearer anything"}
    )
    assert response.status_code == 200, response.text
    assert "features" not in response.json()["predictions"][0]


# Credentials sent to the feature service and the drift intake


@pytest.fixture
def features_token(features, workdir):
    yield features
    features.token = FEATURES_TOKEN
    (workdir / "features-read").write_text(FEATURES_TOKEN + "\n")


def test_the_feature_lookup_carries_the_features_read_token_re_read_when_rotated(transformer, features_token, workdir):
    assert transformer.predict([transaction()]).status_code == 200  # the stub answers 401 without the token
    (workdir / "features-read").write_text("rotated-features-token\n")
    features_token.token = "rotated-features-token"
    assert transformer.predict([transaction()]).status_code == 200


def test_a_refused_features_token_is_a_503_naming_the_feature_service(transformer, features_token):
    features_token.token = "a-token-this-transformer-does-not-have"
    response = transformer.predict([transaction()])
    assert response.status_code == 503, response.text
    answer = response.json()
    assert answer["type"] == "features_unavailable"
    assert "feature service" in answer["error"] and "unauthorized" in answer["error"]


@pytest.fixture
def sink_token(sink):
    yield sink
    sink.token = INGEST_TOKEN


def test_events_carry_the_drift_ingest_token_and_a_refused_one_is_a_failed_send(transformer, sink_token):
    inference_id = transformer.predict([transaction(transaction_id="authed")]).json()["inference_id"]
    events = sink_token.wait_for(lambda evs: sum(e["headers"].get("ce-id") == inference_id for e in evs) == 2)
    assert {e["headers"]["authorization"] for e in events if e["headers"]["ce-id"] == inference_id} == {
        f"Bearer {INGEST_TOKEN}"
    }
    sink_token.token = "a-token-this-transformer-does-not-have"
    before = transformer.metric("flywheel_transformer_events_failed_total")
    assert transformer.predict([transaction()]).status_code == 200  # scoring never waits for the sink
    deadline = time.monotonic() + 10
    while transformer.metric("flywheel_transformer_events_failed_total") < before + 2:
        assert time.monotonic() < deadline, "the refused events were not counted as failed"
        time.sleep(0.05)
