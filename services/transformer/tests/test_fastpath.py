"""The fast path (_fastpath) answers `POST /v1/models/fraud:predict` itself, exactly as KServe's handlers would.

Two transformer processes on the same stubs, one with FLYWHEEL_TRANSFORMER_FAST_PATH on (the default), one with
it off; the same requests, valid and invalid, get the same status, body and headers from both (the inference id,
a fresh uuid4 per request, set aside), and count the same in the transformer's metrics. KServe's own histograms
of `Model.__call__` show which route a request took.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import V2_DEFAULTS, publish_version, transaction
from servers import CloudEventSink, FeatureServerStub, PredictorStub, TransformerProcess

DEBUG_TOKEN = "fastpath-debug-token"
MAX_BODY_BYTES = 4096
KSERVE_CALLS = "request_preprocess_seconds_count"
"""KServe's histogram of `Model.__call__`'s preprocess step: it counts every request KServe's handler serves."""
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
COUNTERS = (
    "flywheel_transformer_requests_total",
    "flywheel_transformer_invalid_requests_total",
    "flywheel_transformer_failed_requests_total",
    "flywheel_transformer_predictions_total",
    "flywheel_transformer_declines_total",
    "flywheel_transformer_unseen_values_total",
    "flywheel_transformer_events_submitted_total",
    "flywheel_transformer_request_seconds_count",
)


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    path = tmp_path_factory.mktemp("fastpath")
    publish_version(path / "model_repo")
    publish_version(path / "model_repo", defaults=V2_DEFAULTS)
    (path / "debug-token").write_text(DEBUG_TOKEN + "\n")
    with FeatureServerStub() as features, PredictorStub() as predictor, CloudEventSink() as sink:
        yield {"path": path, "features": features, "predictor": predictor, "sink": sink}


def _transformer(stubs: dict[str, Any], fast_path: str) -> TransformerProcess:
    path = stubs["path"]
    env = {
        "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(path / "model_repo"),
        "FLYWHEEL_TRANSFORMER_MODEL_VERSION": "v1",
        "FLYWHEEL_TRANSFORMER_FEATURES_URL": stubs["features"].url,
        "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": stubs["predictor"].url,
        "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": stubs["sink"].url + "/",
        "FLYWHEEL_TRANSFORMER_HTTP_HOST": "127.0.0.1",
        "FLYWHEEL_TRANSFORMER_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "FLYWHEEL_TRANSFORMER_DEBUG_FEATURES": "true",
        "FLYWHEEL_TRANSFORMER_DEBUG_TOKEN_FILE": str(path / "debug-token"),
        "FLYWHEEL_TRANSFORMER_FAST_PATH": fast_path,
    }
    return TransformerProcess(env, path / f"transformer-fast-{fast_path}.log")


@pytest.fixture(scope="module")
def fast(stubs: dict[str, Any]) -> Iterator[TransformerProcess]:
    with _transformer(stubs, "true") as process:
        yield process


@pytest.fixture(scope="module")
def kserve(stubs: dict[str, Any]) -> Iterator[TransformerProcess]:
    with _transformer(stubs, "false") as process:
        yield process


JSON = {"content-type": "application/json"}
DEBUG = {"x-flywheel-debug-features": "1", "authorization": f"Bearer {DEBUG_TOKEN}"}
STRUCTURED_EVENT = {
    "specversion": "1.0", "id": "e1", "source": "urn:test", "type": "t", "time": "2026-11-23T12:00:00Z",
    "data": {"instances": [transaction()]},
}


def _body(instances: Any) -> bytes:
    return json.dumps({"instances": instances}).encode()


# (name, method, headers, body): each sent to both transformers.
REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("one transaction", "POST", JSON, _body([transaction()])),
    ("a batch", "POST", JSON, _body([transaction(transaction_id="a", amount=1.0), transaction(transaction_id="b")])),
    ("no content type", "POST", {}, _body([transaction()])),
    ("ld+json", "POST", {"content-type": "application/ld+json"}, _body([transaction()])),
    ("json with a charset", "POST", {"content-type": "application/json; charset=utf-8"}, _body([transaction()])),
    ("a named version", "POST", {**JSON, "x-flywheel-model-version": "v2"}, _body([transaction()])),
    ("a malformed version", "POST", {**JSON, "x-flywheel-model-version": "latest"}, _body([transaction()])),
    ("an unpublished version", "POST", {**JSON, "x-flywheel-model-version": "v9"}, _body([transaction()])),
    ("debug features with the token", "POST", {**JSON, **DEBUG}, _body([transaction()])),
    ("debug features without it", "POST", {**JSON, "x-flywheel-debug-features": "1"}, _body([transaction()])),
    ("an unseen value", "POST", JSON, _body([transaction(merchant_category="no-such-category")])),
    ("a string amount", "POST", JSON, _body([transaction(amount="12.5")])),
    ("a missing field", "POST", JSON, _body([{k: v for k, v in transaction().items() if k != "card_id"}])),
    ("a negative amount", "POST", JSON, _body([transaction(amount=-1.0)])),
    ("no instances", "POST", JSON, _body([])),
    ("not an object", "POST", JSON, b"[1, 2]"),
    ("null", "POST", JSON, b"null"),
    ("not JSON", "POST", JSON, b"{not json"),
    ("empty", "POST", JSON, b""),
    ("NaN", "POST", JSON, b'{"instances": [{"amount": NaN}]}'),
    ("1e400", "POST", JSON, b'{"instances": [{"amount": 1e400}]}'),
    ("text/plain", "POST", {"content-type": "text/plain"}, _body([transaction()])),
    ("over MAX_BODY_BYTES", "POST", JSON, _body([transaction()] * 20)),
    ("a structured CloudEvent", "POST", JSON, json.dumps(STRUCTURED_EVENT).encode()),
    ("GET on the predict route", "GET", {}, b""),
    ("another model", "POST", JSON, _body([transaction()])),
]
PATHS = {"another model": "/v1/models/other:predict"}


def _send(process: TransformerProcess, name: str, method: str, headers: dict[str, str], body: bytes) -> dict:
    path = PATHS.get(name, "/v1/models/fraud:predict")
    response = httpx.request(method, f"{process.url}{path}", headers=headers, content=body, timeout=10)
    answer = {
        "status": response.status_code,
        "headers": [(k, UUID.sub("<id>", v)) for k, v in response.headers.multi_items() if k not in ("date",)],
        "body": UUID.sub("<id>", response.text),
    }
    return answer


@pytest.mark.parametrize(("name", "method", "headers", "body"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_the_fast_path_answers_exactly_as_kserves_handlers(fast, kserve, name, method, headers, body):
    before = {counter: (fast.metric(counter), kserve.metric(counter)) for counter in COUNTERS}
    assert _send(fast, name, method, headers, body) == _send(kserve, name, method, headers, body)
    for counter, (fast_before, kserve_before) in before.items():
        assert fast.metric(counter) - fast_before == kserve.metric(counter) - kserve_before, counter


def test_a_plain_json_prediction_does_not_go_through_kserves_handler(fast):
    before = fast.metric(KSERVE_CALLS)
    response = fast.predict([transaction()])
    assert response.status_code == 200, response.text
    assert response.headers["x-flywheel-inference-id"] == response.json()["inference_id"]
    assert fast.metric(KSERVE_CALLS) == before


def test_with_the_fast_path_off_predictions_go_through_kserves_handler(kserve):
    before = kserve.metric(KSERVE_CALLS)
    assert kserve.predict([transaction()]).status_code == 200
    assert kserve.metric(KSERVE_CALLS) == before + 1


def test_a_cloudevent_still_goes_through_kserves_handler(fast):
    before = fast.metric(KSERVE_CALLS)
    response = httpx.post(f"{fast.url}/v1/models/fraud:predict", json=STRUCTURED_EVENT, timeout=10)
    assert response.status_code == 200, response.text
    assert fast.metric(KSERVE_CALLS) == before + 1


def test_the_setting_is_documented_in_the_readme():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "`FAST_PATH` true" in readme
