"""Admission control in the real transformer process: past MAX_IN_FLIGHT (+ MAX_WAITING) a prediction is answered
503 + Retry-After at once, probes and /metrics still answer, and the slot comes back.

Shedding comes before the body is parsed: under overload a request gets the 503 whatever its body, malformed JSON
included (issue 11 saw one such 503 in a busy soak and asked why). That is on purpose: parsing costs the CPU the
limit protects, and the 503 says "not now", never "your body is fine".

A prediction is held in flight deterministically by a feature service that answers only when the test releases
it (FeatureServerStub's `hang` mode)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import publish_version, transaction
from servers import FeatureServerStub, PredictorStub, TransformerProcess

MALFORMED = b'{"instances": [{"amount": 12.5,'
"""The soak's malformed-JSON request (scripts/soak.py)."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    workdir: Path = tmp_path_factory.mktemp("overload")
    publish_version(workdir / "model_repo")
    with FeatureServerStub() as features, PredictorStub() as predictor:
        env = {"FLYWHEEL_TRANSFORMER_MODEL_REPO": str(workdir / "model_repo"),
               "FLYWHEEL_TRANSFORMER_FEATURES_URL": features.url, "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": predictor.url,
               "FLYWHEEL_TRANSFORMER_FEATURES_TIMEOUT_S": "30", "FLYWHEEL_TRANSFORMER_HTTP_HOST": "127.0.0.1",
               "FLYWHEEL_TRANSFORMER_MAX_IN_FLIGHT": "1", "FLYWHEEL_TRANSFORMER_MAX_WAITING": "0",
               "FLYWHEEL_TRANSFORMER_RETRY_AFTER_S": "3"}
        with TransformerProcess(env, workdir / "transformer.log") as transformer:
            yield transformer, features


@contextmanager
def one_prediction_in_flight(transformer: TransformerProcess, features: FeatureServerStub) -> Iterator[None]:
    """The only slot (MAX_IN_FLIGHT 1, MAX_WAITING 0) taken by a prediction held at the feature service until the
    block ends; then it must have been answered 200 and the slot be free again."""
    features.mode = "hang"
    held: list[httpx.Response] = []
    before = len(features.requests)
    worker = threading.Thread(target=lambda: held.append(transformer.predict([transaction()])))
    worker.start()
    try:
        bound = 100  # polls until the held request reached the feature service: a bound, not the assertion
        while len(features.requests) == before and bound:
            worker.join(0.05)
            bound -= 1
        assert transformer.metric("flywheel_transformer_admission_in_flight") == 1
        yield
    finally:
        features.mode = "ok"
        features.release()
        worker.join(15)
    assert held and held[0].status_code == 200, held
    assert transformer.metric("flywheel_transformer_admission_in_flight") == 0


def assert_shed(response: httpx.Response) -> None:
    assert response.status_code == 503 and response.headers["retry-after"] == "3", response.text
    body = response.json()
    assert body["code"] == "overloaded" and "FLYWHEEL_TRANSFORMER_MAX_IN_FLIGHT" in body["error"]


def test_past_the_limit_a_prediction_is_shed_with_503_and_retry_after(setup) -> None:
    transformer, features = setup
    shed_before = transformer.metric('flywheel_transformer_admission_shed_total{reason="queue_full"}')
    with one_prediction_in_flight(transformer, features), httpx.Client(base_url=transformer.url, timeout=10) as client:
        assert_shed(transformer.predict([transaction(transaction_id="shed")]))
        for probe in ("/v2/health/live", "/v2/health/ready", "/v2/models/fraud/ready", "/metrics"):
            assert client.get(probe).status_code == 200, probe
        shed = transformer.metric('flywheel_transformer_admission_shed_total{reason="queue_full"}')
        assert shed - shed_before == 1
    assert transformer.predict([transaction(transaction_id="after")]).status_code == 200


def test_shedding_comes_before_parsing_so_malformed_json_is_shed_too_then_a_400_once_there_is_room(setup) -> None:
    transformer, features = setup
    url = f"{transformer.url}/v1/models/fraud:predict"
    headers = {"content-type": "application/json"}
    invalid_before = transformer.metric("flywheel_transformer_invalid_requests_total")
    with one_prediction_in_flight(transformer, features):
        assert_shed(httpx.post(url, content=MALFORMED, headers=headers, timeout=10))
        # Not read, so not counted as an invalid request: the shed counter has it.
        assert transformer.metric("flywheel_transformer_invalid_requests_total") == invalid_before
    answer = httpx.post(url, content=MALFORMED, headers=headers, timeout=10)
    assert answer.status_code == 400 and answer.json()["type"] == "invalid_request", answer.text
    assert "retry-after" not in answer.headers
