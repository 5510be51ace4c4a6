"""Admission control in the real transformer process: past MAX_IN_FLIGHT (+ MAX_WAITING) a prediction is answered
503 + Retry-After at once, probes and /metrics still answer, and the slot comes back.

A prediction is held in flight deterministically by a feature service that answers only when the test releases
it (FeatureServerStub's `hang` mode)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from conftest import publish_version, transaction
from servers import FeatureServerStub, PredictorStub, TransformerProcess


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


def test_past_the_limit_a_prediction_is_shed_with_503_and_retry_after(setup) -> None:
    transformer, features = setup
    features.mode = "hang"
    held: list[httpx.Response] = []
    before = len(features.requests)
    worker = threading.Thread(target=lambda: held.append(transformer.predict([transaction()])))
    worker.start()
    try:
        with httpx.Client(base_url=transformer.url, timeout=10) as client:
            bound = 100  # polls until the held request reached the feature service: a bound, not the assertion
            while len(features.requests) == before and bound:
                worker.join(0.05)
                bound -= 1
            assert transformer.metric("flywheel_transformer_admission_in_flight") == 1
            shed = transformer.predict([transaction(transaction_id="shed")])
            assert shed.status_code == 503 and shed.headers["retry-after"] == "3"
            body = shed.json()
            assert body["code"] == "overloaded" and "FLYWHEEL_TRANSFORMER_MAX_IN_FLIGHT" in body["error"]
            for probe in ("/v2/health/live", "/v2/health/ready", "/v2/models/fraud/ready", "/metrics"):
                assert client.get(probe).status_code == 200, probe
            assert transformer.metric('flywheel_transformer_admission_shed_total{reason="queue_full"}') == 1
    finally:
        features.mode = "ok"
        features.release()
        worker.join(15)
    assert held and held[0].status_code == 200, held
    assert transformer.metric("flywheel_transformer_admission_in_flight") == 0
    assert transformer.predict([transaction(transaction_id="after")]).status_code == 200
