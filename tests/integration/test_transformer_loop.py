"""A raw transaction through the whole serving path: transformer -> Feast feature server -> predictor."""

from __future__ import annotations

import json
import time

import httpx

from flywheel_core import schema


def raw(transaction: dict) -> dict:
    return {key: transaction[key] for key in schema.RAW_TRANSACTION_FIELDS}


def predict(ports, instances: list[dict], headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict", json={"instances": instances},
        headers=headers or {}, timeout=10,
    )


def test_raw_transaction_gets_score_decision_and_model_version(stack, ports, live_transactions):
    transactions = [raw(t) for t in live_transactions[:5]]
    response = predict(ports, transactions)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["id"] for p in predictions] == [t["transaction_id"] for t in transactions]
    for prediction in predictions:
        assert 0.0 <= prediction["score"] <= 1.0
        assert prediction["decision"] == ("decline" if prediction["score"] >= prediction["threshold"] else "approve")
        assert prediction["model_version"] == "v1"
        assert prediction["degraded"] is False


def test_known_cards_are_served_their_online_features(stack, ports, live_transactions):
    response = predict(ports, [raw(live_transactions[0])])
    [prediction] = response.json()["predictions"]
    assert not any(name.startswith("txn_count") for name in prediction["missing_features"])


def test_unknown_card_is_scored_with_defaults_and_says_so(stack, ports, live_transactions):
    transaction = {**raw(live_transactions[0]), "card_id": "c999999", "merchant_id": "m99999"}
    response = predict(ports, [transaction])
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert "txn_count_24h" in prediction["missing_features"]
    assert "merchant_fraud_rate_30d" in prediction["missing_features"]


def test_missing_field_is_a_400_naming_field_and_instance(stack, ports, live_transactions):
    transaction = raw(live_transactions[0])
    del transaction["amount"]
    response = predict(ports, [raw(live_transactions[1]), transaction])
    assert response.status_code == 400
    assert "amount" in response.text and "1" in response.text


def test_malformed_json_is_a_400(stack, ports):
    response = httpx.post(
        f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict", content=b"{not json",
        headers={"content-type": "application/json"}, timeout=10,
    )
    assert response.status_code == 400


def test_each_inference_is_logged_as_kserve_cloudevents(stack, ports, live_transactions, event_sink):
    response = predict(ports, [raw(live_transactions[2])])
    inference_id = response.headers["x-flywheel-inference-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with event_sink.lock:
            events = [e for e in event_sink.events if e["headers"].get("ce-id") == inference_id]
        if len(events) == 2:
            break
        time.sleep(0.05)
    assert sorted(e["headers"]["ce-type"] for e in events) == [
        "org.kubeflow.serving.inference.request",
        "org.kubeflow.serving.inference.response",
    ]
    for event in events:
        assert event["headers"]["ce-specversion"] == "1.0"
        assert event["headers"]["ce-inferenceservicename"]
        json.loads(event["body"])


def test_drift_service_is_ready_on_the_published_version_with_its_detector_state(stack, ports, model_repo):
    response = httpx.get(f"http://127.0.0.1:{ports.drift}/ready", timeout=10)
    assert response.status_code == 200, response.text
    assert (model_repo / "fraud" / "v1" / "drift_state" / "state.json").is_file()
