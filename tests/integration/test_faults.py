"""Faults on the serving path: a dependency killed mid-traffic gives a clear, defined answer, and the
path recovers when the dependency comes back. Each test restores the stack it broke."""

from __future__ import annotations

import httpx

from flywheel_core import schema


def predict(ports, transaction: dict) -> httpx.Response:
    instance = {key: transaction[key] for key in schema.RAW_TRANSACTION_FIELDS}
    return httpx.post(f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict", json={"instances": [instance]}, timeout=15)


def test_feature_service_killed_gives_503_naming_it_then_recovers(stack, ports, live_transactions):
    assert predict(ports, live_transactions[0]).status_code == 200
    stack.kill("features")
    try:
        response = predict(ports, live_transactions[0])
        assert response.status_code == 503
        assert "feature" in response.text.lower()
    finally:
        stack.restart("features")
    assert predict(ports, live_transactions[0]).status_code == 200


def test_predictor_killed_gives_503_then_recovers(stack, ports, live_transactions):
    stack.kill("predictor")
    try:
        response = predict(ports, live_transactions[1])
        assert response.status_code == 503
        assert "predictor" in response.text.lower()
    finally:
        stack.restart("predictor")
    assert predict(ports, live_transactions[1]).status_code == 200
