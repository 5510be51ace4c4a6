"""The transformer as a real process on loopback: KServe's HTTP server, real sockets, a real event sink."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from cloudevents.http import from_http

from flywheel_core import schema

from conftest import DEFAULTS, ONLINE_NAMES, V2_DEFAULTS, publish_version, transaction
from servers import UNKNOWN_CARD, UNKNOWN_MERCHANT, CloudEventSink, FeatureServerStub, PredictorStub, TransformerProcess

JSON = {"content-type": "application/json"}
DEBUG_TOKEN = "server-debug-token"
DEBUG = {"x-flywheel-debug-features": "1", "authorization": f"Bearer {DEBUG_TOKEN}"}
"""Ask for the model input, with the debug token the transformers below accept (DEBUG_FEATURES on)."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("server")
    publish_version(path / "model_repo")  # v1, the version the transformers below load at start
    publish_version(path / "model_repo", defaults=V2_DEFAULTS)  # v2, served to requests that name it
    (path / "transformer-debug").write_text(DEBUG_TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def features():
    with FeatureServerStub() as stub:
        yield stub


@pytest.fixture(scope="module")
def predictor():
    with PredictorStub() as stub:
        yield stub


@pytest.fixture(scope="module")
def sink():
    with CloudEventSink() as server:
        yield server


@pytest.fixture(scope="module")
def transformer(workdir, features, predictor, sink):
    env = {
        "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(workdir / "model_repo"),
        "FLYWHEEL_TRANSFORMER_MODEL_VERSION": "v1",
        "FLYWHEEL_TRANSFORMER_FEATURES_URL": features.url,
        "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": predictor.url,
        "FLYWHEEL_TRANSFORMER_FEATURES_TIMEOUT_S": "0.3",
        "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": sink.url + "/",
        "FLYWHEEL_TRANSFORMER_EVENT_SOURCE": "urn:test:transformer",
        "FLYWHEEL_TRANSFORMER_EVENT_NAMESPACE": "flywheel",
        "FLYWHEEL_TRANSFORMER_EVENT_INFERENCE_SERVICE": "fraud-isvc",
        "FLYWHEEL_TRANSFORMER_HTTP_HOST": "127.0.0.1",
        "FLYWHEEL_TRANSFORMER_DEBUG_FEATURES": "true",
        "FLYWHEEL_TRANSFORMER_DEBUG_TOKEN_FILE": str(workdir / "transformer-debug"),
    }
    with TransformerProcess(env, workdir / "transformer.log") as process:
        yield process


@pytest.fixture
def features_ok(features):
    features.mode = "ok"
    yield features
    features.mode = "ok"
    features.release()


def test_ready_and_live_once_metadata_is_loaded(transformer):
    assert httpx.get(f"{transformer.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{transformer.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{transformer.url}/v2/models/fraud/ready").json()["ready"] is True


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) of sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def test_it_listens_on_the_configured_host_only(transformer):
    # KServe's REST server hard-codes 0.0.0.0; FLYWHEEL_TRANSFORMER_HTTP_HOST=127.0.0.1 must win over it.
    assert _listening_addresses(transformer.port) == {"0100007F"}


def test_model_metadata_describes_the_transformer_and_its_versions(transformer):
    response = httpx.get(f"{transformer.url}/v2/models/fraud")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["versions"]) == ("fraud", ["v1", "v2"])  # MODEL_VERSION=v1 first
    assert body["platform"] == "flywheel-transformer (predictor: onnxruntime_onnx)"
    assert {t["name"] for t in body["inputs"]} == set(schema.RAW_TRANSACTION_FIELDS)
    assert {"score", "decision", "missing_reasons", "unknown_entities", "degraded"} <= {
        t["name"] for t in body["outputs"]
    }


def test_transactions_are_scored_over_loopback(transformer, features_ok, predictor):
    response = transformer.predict(
        [
            transaction(transaction_id="small", amount=20.0),
            transaction(transaction_id="big", card_id=UNKNOWN_CARD, merchant_id=UNKNOWN_MERCHANT, amount=900.0),
        ],
        headers=DEBUG,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    small, big = body["predictions"]
    assert (small["id"], small["decision"], small["score"]) == ("small", "approve", pytest.approx(0.1))
    assert (big["id"], big["decision"], big["score"]) == ("big", "decline", pytest.approx(0.9))
    assert small["model_version"] == big["model_version"] == "v9"
    assert small["threshold"] == 0.5
    assert small["missing_features"] == [] and big["missing_features"] == ONLINE_NAMES
    assert big["missing_reasons"] == dict.fromkeys(ONLINE_NAMES, "not_found")
    assert (big["unknown_entities"], big["degraded"]) == (["card", "merchant"], False)
    assert (small["missing_reasons"], small["unknown_entities"], small["degraded"]) == ({}, [], False)
    assert big["features"]["txn_count_1h"] == DEFAULTS["txn_count_1h"]
    assert response.headers["x-flywheel-inference-id"] == body["inference_id"]
    assert predictor.paths[-1] == "/v2/models/fraud/infer"
    assert response.headers["x-flywheel-model-version"] == "v9"
    assert response.headers["x-flywheel-scores"] == "0.1,0.9"
    assert response.headers["x-flywheel-decisions"] == "approve,decline"
    assert list(small["features"].values()) == predictor.requests[-1]["inputs"][0]["data"][: schema.INPUT_DIM]
    assert features_ok.requests[-1]["entities"]["card_id"] == ["c000001", UNKNOWN_CARD]


def test_each_inference_reaches_the_sink_as_two_kserve_cloudevents(transformer, features_ok, sink):
    response = transformer.predict([transaction(transaction_id="logged")])
    inference_id = response.json()["inference_id"]
    events = sink.wait_for(lambda evs: sum(e["headers"].get("ce-id") == inference_id for e in evs) == 2)
    pair = [e for e in events if e["headers"]["ce-id"] == inference_id]
    types = sorted(e["headers"]["ce-type"] for e in pair)
    assert types == ["org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response"]
    for event in pair:
        headers = event["headers"]
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-source"] == "urn:test:transformer"
        assert headers["ce-inferenceservicename"] == "fraud-isvc"
        assert headers["ce-namespace"] == "flywheel"
        assert headers["ce-component"] == "transformer"
        assert headers["ce-endpoint"] == "default"
        assert headers["content-type"] == "application/json"
        datetime.fromisoformat(headers["ce-time"])
        assert from_http(headers, event["body"])["id"] == inference_id
    request = json.loads(next(e for e in pair if e["headers"]["ce-type"].endswith("request"))["body"])
    response_event = json.loads(next(e for e in pair if e["headers"]["ce-type"].endswith("response"))["body"])
    assert request["id"] == response_event["id"] == inference_id
    assert request["inputs"][0]["shape"] == [1, schema.INPUT_DIM]
    assert request["inputs"][1]["data"] == ["logged"]
    assert response_event["model_version"] == "v9"
    assert response_event["outputs"][0]["name"] == "probability"


def test_a_request_naming_a_version_is_scored_by_it_with_its_defaults(transformer, features_ok, predictor):
    response = transformer.predict(
        [transaction(transaction_id="known", amount=20.0), transaction(transaction_id="new", card_id=UNKNOWN_CARD)],
        headers={"x-flywheel-model-version": "v2", **DEBUG},
    )
    assert response.status_code == 200, response.text
    known, new = response.json()["predictions"]
    assert predictor.paths[-1] == "/v2/models/fraud/versions/v2/infer"
    assert known["model_version"] == new["model_version"] == "v2"
    assert new["features"]["txn_count_1h"] == V2_DEFAULTS["txn_count_1h"]
    assert response.headers["x-flywheel-model-version"] == "v2"
    assert response.headers["x-flywheel-scores"] == "0.1,0.1"
    assert response.headers["x-flywheel-decisions"] == "approve,approve"


def test_more_than_256_instances_get_no_score_headers_over_loopback(transformer, features_ok):
    response = transformer.predict([transaction(transaction_id=f"t{i}") for i in range(257)])
    assert response.status_code == 200, response.text
    assert response.headers["x-flywheel-model-version"] == "v9"
    assert "x-flywheel-scores" not in response.headers and "x-flywheel-decisions" not in response.headers


def test_the_events_of_a_named_version_carry_it(transformer, features_ok, sink):
    response = transformer.predict(
        [transaction(transaction_id="versioned")], headers={"x-flywheel-model-version": "v2"}
    )
    inference_id = response.json()["inference_id"]
    events = sink.wait_for(lambda evs: sum(e["headers"].get("ce-id") == inference_id for e in evs) == 2)
    pair = {e["headers"]["ce-type"].rsplit(".", 1)[1]: e for e in events if e["headers"]["ce-id"] == inference_id}
    assert pair["request"]["headers"]["ce-modelversion"] == pair["response"]["headers"]["ce-modelversion"] == "v2"
    assert json.loads(pair["request"]["body"])["parameters"]["metadata_version"] == "v2"
    assert json.loads(pair["response"]["body"])["model_version"] == "v2"


@pytest.fixture
def serving_v1_only(predictor):
    predictor.served = {"v1"}
    yield predictor
    predictor.served = {"v1", "v2"}


@pytest.mark.parametrize(
    ("version", "status", "expected"),
    [
        ("2", 400, {"type": "invalid_header", "header": "x-flywheel-model-version"}),
        ("v2; drop", 400, {"type": "invalid_header", "header": "x-flywheel-model-version"}),
        ("v7", 404, {"type": "version_not_published", "version": "v7", "published": ["v1", "v2"]}),
        ("v2", 404, {"type": "version_not_served", "version": "v2"}),
    ],
)
def test_a_version_that_cannot_be_served_gets_a_json_4xx_naming_it(
    transformer, features_ok, serving_v1_only, version, status, expected
):
    response = transformer.predict([transaction()], headers={"x-flywheel-model-version": version})
    assert response.status_code == status, response.text
    body = response.json()
    for key, value in expected.items():
        assert body[key] == value
    assert expected.get("version", "x-flywheel-model-version") in body["error"]
    assert "x-flywheel-scores" not in response.headers


@pytest.mark.parametrize(
    ("send", "status", "expected"),
    [
        (lambda t: t.predict([transaction(amount="12.5")]), 400, {"field": "amount", "index": 0}),
        (
            lambda t: t.predict([transaction(), {k: v for k, v in transaction().items() if k != "card_id"}]),
            400,
            {"field": "card_id", "index": 1},
        ),
        (lambda t: t.predict([transaction(event_timestamp="not a time")]), 400, {"field": "event_timestamp"}),
        (lambda t: t.predict([]), 400, {"field": "instances"}),
        (lambda t: t.predict([transaction()] * 1001), 413, {"field": "instances"}),
        (lambda t: httpx.post(f"{t.url}/v1/models/fraud:predict", content=b"{not json", headers=JSON), 400, {}),
        (lambda t: httpx.post(f"{t.url}/v1/models/fraud:predict", content=b"[1, 2]", headers=JSON), 400, {}),
        (
            lambda t: httpx.post(
                f"{t.url}/v1/models/fraud:predict", content=b'{"instances": []}', headers={"content-type": "text/plain"}
            ),
            415,
            {"type": "unsupported_media_type"},
        ),
        (
            lambda t: httpx.post(
                f"{t.url}/v2/models/fraud/infer",
                headers=JSON,
                json={"inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            ),
            400,
            {"type": "unsupported_protocol"},
        ),
    ],
)
def test_bad_requests_get_a_json_4xx_naming_the_problem(transformer, features_ok, send, status, expected):
    before = transformer.metric("flywheel_transformer_requests_total")
    response = send(transformer)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]
    for key, value in expected.items():
        assert body[key] == value
    if "field" in expected:
        assert expected["field"] in body["error"]
    assert transformer.metric("flywheel_transformer_requests_total") >= before


def test_feature_service_errors_give_a_503_that_says_so(transformer, features_ok):
    features_ok.mode = "fail"
    before = transformer.metric("flywheel_transformer_feature_lookup_failures_total")
    response = transformer.predict([transaction()])
    assert response.status_code == 503
    assert response.json()["type"] == "features_unavailable"
    assert "feature service is unavailable" in response.json()["error"]
    assert transformer.metric("flywheel_transformer_feature_lookup_failures_total") == before + 1


def test_a_feature_service_that_never_answers_gives_a_503_after_the_features_timeout(transformer, features_ok):
    features_ok.mode = "hang"  # answers only when the test releases it, long after the transformer gave up
    before = transformer.metric("flywheel_transformer_feature_lookup_timeouts_total")
    response = transformer.predict([transaction()])  # a transformer that waited for the stub: a ReadTimeout here
    assert response.status_code == 503
    assert "no answer within 0.3 s" in response.json()["error"]
    assert transformer.metric("flywheel_transformer_feature_lookup_timeouts_total") == before + 1


def test_metrics_cover_requests_latency_and_events(transformer, features_ok, sink):
    transformer.predict([transaction()])
    for name in (
        "flywheel_transformer_requests_total",
        "flywheel_transformer_predictions_total",
        "flywheel_transformer_request_seconds_count",
        "flywheel_transformer_feature_lookup_seconds_count",
        "flywheel_transformer_predictor_seconds_count",
        "flywheel_transformer_model_info",
    ):
        assert transformer.metric(name) >= 1, name
    deadline = time.monotonic() + 5
    while transformer.metric("flywheel_transformer_events_sent_total") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert transformer.metric("flywheel_transformer_events_sent_total") >= 2


@pytest.fixture(scope="module")
def degraded(workdir, predictor):
    """Features down (nothing listens), fallback to defaults, a queue of one record and a sink that holds every
    event until the test releases it (for longer than the predict client's 10 s and the sender's 30 s)."""
    with CloudEventSink(hold=True) as held_sink:
        env = {
            "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(workdir / "model_repo"),
            "FLYWHEEL_TRANSFORMER_MODEL_VERSION": "v1",
            "FLYWHEEL_TRANSFORMER_FEATURES_URL": "http://127.0.0.1:9",
            "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": predictor.url,
            "FLYWHEEL_TRANSFORMER_FEATURES_FALLBACK": "defaults",
            "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": held_sink.url + "/",
            "FLYWHEEL_TRANSFORMER_EVENT_QUEUE_SIZE": "1",
            "FLYWHEEL_TRANSFORMER_EVENT_SENDERS": "1",
            # No linger: the sender posts the record it took at once (and is held there), so the queue of one is
            # the whole bound that the drop test counts against.
            "FLYWHEEL_TRANSFORMER_EVENT_BATCH_LINGER_S": "0",
            "FLYWHEEL_TRANSFORMER_EVENT_TIMEOUT_S": "30",
            "FLYWHEEL_TRANSFORMER_DEBUG_FEATURES": "true",
            "FLYWHEEL_TRANSFORMER_DEBUG_TOKEN_FILE": str(workdir / "transformer-debug"),
        }
        with TransformerProcess(env, workdir / "degraded.log") as process:
            try:
                yield process, held_sink
            finally:
                held_sink.hold = False  # the drain at exit sends what is queued at once
                held_sink.release()


def test_with_fallback_defaults_a_feature_outage_still_scores_marked_degraded(degraded):
    degraded, _ = degraded
    response = degraded.predict([transaction()], headers=DEBUG)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["degraded"] is True
    assert prediction["missing_features"] == ONLINE_NAMES
    assert prediction["missing_reasons"] == dict.fromkeys(ONLINE_NAMES, "lookup_failed")
    assert prediction["unknown_entities"] == []
    assert all(prediction["features"][name] == DEFAULTS[name] for name in ONLINE_NAMES)
    assert degraded.metric("flywheel_transformer_feature_fallbacks_total") >= 1


def test_a_full_event_queue_drops_events_and_counts_them_without_slowing_predictions(degraded):
    degraded, held_sink = degraded
    before = degraded.metric("flywheel_transformer_events_dropped_total")
    # Each predict has the client's 10 s: scoring that waited for the held sink (or for a place in the queue)
    # would end in a ReadTimeout, since the sink answers nothing before the test is over.
    statuses = [degraded.predict([transaction(transaction_id=f"q{i}")]).status_code for i in range(5)]
    assert statuses == [200] * 5
    assert held_sink.events == []  # every answer above came while the sink held its first event
    # One record in the sender's hands and one in the queue at most: the other 3, 2 events each, dropped.
    assert degraded.metric("flywheel_transformer_events_dropped_total") - before >= 6


def test_not_ready_until_a_version_is_published_then_ready(workdir, features, predictor):
    empty = workdir / "empty_repo"
    env = {
        "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(empty),
        "FLYWHEEL_TRANSFORMER_MODEL_POLL_INTERVAL_S": "0.2",
        "FLYWHEEL_TRANSFORMER_FEATURES_URL": features.url,
        "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": predictor.url,
    }
    with TransformerProcess(env, workdir / "waiting.log") as process:
        assert httpx.get(f"{process.url}/v2/health/ready").status_code == 503
        assert httpx.get(f"{process.url}/v2/health/live").status_code == 200
        assert process.predict([transaction()]).status_code == 503
        publish_version(empty)
        deadline = time.monotonic() + 10
        while httpx.get(f"{process.url}/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.1)
        assert process.predict([transaction()]).status_code == 200


def test_a_bad_setting_exits_2_naming_the_variable(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "flywheel_transformer"],
        env={"PATH": "/usr/bin:/bin", "FLYWHEEL_TRANSFORMER_THRESHOLD": "7"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Config 'FLYWHEEL_TRANSFORMER_THRESHOLD' has value '7'" in result.stderr


def test_a_version_that_does_not_fit_exits_2(tmp_path):
    repo = tmp_path / "repo"
    publish_version(repo, feature_service="fraud_v0")
    result = subprocess.run(
        [sys.executable, "-m", "flywheel_transformer"],
        env={
            "PATH": "/usr/bin:/bin",
            "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(repo),
            "FLYWHEEL_TRANSFORMER_HTTP_PORT": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "fraud_v0" in result.stderr


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-debug-token"])
def test_with_debug_features_on_the_header_without_the_token_is_a_401(transformer, features_ok, authorization):
    before = len(features_ok.requests)
    headers = {"x-flywheel-debug-features": "1", **({"authorization": authorization} if authorization else {})}
    response = transformer.predict([transaction()], headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer realm="flywheel-transformer"'
    assert (response.json()["type"], response.json()["code"]) == ("unauthorized", "unauthorized")
    assert "predictions" not in response.json()
    assert len(features_ok.requests) == before  # refused before any lookup
