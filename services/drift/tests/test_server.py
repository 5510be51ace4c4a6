"""The HTTP contract: what is accepted, what is refused and how, and what can be read back."""

import json

import numpy as np

from conftest import Harness, make_settings, synthetic_probabilities, synthetic_rows
from test_events import kserve, transformer_request, transformer_response


def test_transformer_cloudevents_are_accepted_after_they_are_persisted(harness):
    for role, body in (("request", transformer_request(3)), ("response", transformer_response(3))):
        r = harness.client.post("/", headers=kserve(role), content=body)
        assert r.status_code == 202
        assert r.json()["id"] == "id-1" and r.json()["seq"] > 0
    # ...on the alias path too
    headers = kserve("request", **{"ce-id": "id-9"})
    r = harness.client.post("/v1/events", headers=headers, content=transformer_request(1))
    assert r.status_code == 202
    harness.sync()
    metrics = harness.client.get("/metrics").text
    assert 'flywheel_drift_events_total{model="fraud"} 3.0' in metrics
    assert 'flywheel_drift_rows_total{model="fraud",version="v1"} 3.0' in metrics


def test_malformed_events_get_a_4xx_naming_the_problem_and_are_counted(harness):
    r = harness.client.post("/", headers={"content-type": "application/json"}, content=b"{}")
    assert r.status_code == 400
    assert r.json() == {"error": "missing CloudEvent attribute header ce-specversion", "type": "invalid_event",
                        "field": "ce-specversion"}
    r = harness.client.post("/", headers=kserve("request"), content=b'{"instances": [[1, 2, 3]]}')
    assert r.status_code == 400 and "takes 19" in r.json()["error"]
    r = harness.client.post("/", headers={**kserve("request"), "content-type": "text/csv"}, content=b"1,2")
    assert r.status_code == 415
    r = harness.client.post("/", headers=kserve("request", **{"ce-inferenceservicename": "churn"}),
                            content=transformer_request(1))
    assert r.status_code == 404 and r.json()["field"] == "model"
    r = harness.client.post("/v1/batch", json={"model": "fraud", "rows": [[1.0] * 19], "probabilities": [0.1, 0.2]})
    assert r.status_code == 400 and r.json()["field"] == "probabilities"
    assert "flywheel_drift_rejected_requests_total 5.0" in harness.client.get("/metrics").text


def test_a_body_over_the_limit_gets_413(tmp_path, repo):
    h = Harness(make_settings(tmp_path, max_body_bytes=2048))
    try:
        r = h.batch(synthetic_rows(50, 0))
        assert r.status_code == 413 and r.json()["type"] == "payload_too_large"
    finally:
        h.close()


def test_past_the_backlog_limit_the_service_answers_429_instead_of_dropping(tmp_path, repo):
    h = Harness(make_settings(tmp_path, max_backlog_rows=1000))
    try:
        with h.service.processor.lock:  # analysis stalls: accepted work piles up
            assert h.batch(synthetic_rows(800, 0)).status_code == 202
            r = h.batch(synthetic_rows(400, 1))
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
        h.sync()
        assert h.batch(synthetic_rows(400, 1)).status_code == 202  # accepted again once it caught up
        assert "flywheel_drift_throttled_requests_total 1.0" in h.client.get("/metrics").text
    finally:
        h.close()


def test_labels_are_idempotent_and_conflicts_are_reported(harness):
    n = 600
    ids = [f"t{i}" for i in range(n)]
    assert harness.batch(synthetic_rows(n, 1), synthetic_probabilities(n, 1), ids).status_code == 202
    harness.sync()
    labels = [{"id": i, "label": int(k % 25 == 0)} for k, i in enumerate(ids)]
    first = harness.client.post("/v1/labels", json={"labels": labels}).json()
    assert first == {"accepted": n, "duplicates": 0, "conflicts": [], "unmatched": 0}
    again = harness.client.post("/v1/labels", json={"labels": labels[:10]}).json()
    assert again == {"accepted": 0, "duplicates": 10, "conflicts": [], "unmatched": 0}
    flipped = harness.client.post("/v1/labels", json={"labels": [{"id": "t1", "label": 1}]}).json()
    assert flipped["conflicts"] == ["t1"]
    version = harness.version()
    assert version["predictions_labelled"] == n and version["predictions_logged"] == n
    assert version["performance"]["rows"] == n and version["performance"]["coverage"] == 1.0
    bad = harness.client.post("/v1/labels", json={"labels": [{"id": "t1", "label": 2}]})
    assert bad.status_code == 400 and bad.json()["field"] == "labels[0].label"


def test_a_label_before_its_prediction_is_joined_when_the_prediction_comes(harness):
    assert harness.client.post("/v1/labels", json={"labels": [{"id": "early", "label": 1}]}).json()["unmatched"] == 1
    harness.batch(synthetic_rows(1, 2), synthetic_probabilities(1, 2), ["early"])
    harness.sync()
    assert harness.version()["predictions_labelled"] == 1


def test_report_json_and_html_show_features_windows_and_plots(harness):
    for seed in range(3):
        harness.batch(synthetic_rows(500, 10 + seed), synthetic_probabilities(500, seed))
    version = harness.version()
    assert version["windows"] == 3
    by_name = {f["name"]: f for f in version["features"]}
    assert by_name["country"]["kind"] == "categorical" and by_name["country"]["test"] == "chi2"
    assert by_name["card_id"]["kind"] == "skipped"
    assert by_name["amount_log"]["test"] == "cvm+mannwhitney" and "p_value" in by_name["amount_log"]["last"]
    assert len(version["history"]) == 3
    html = harness.client.get("/report").text
    assert "<svg" in html and "amount_log" in html and "fraud v1" in html
    json.dumps(version)  # plain JSON, no NaN


def test_health_ready_and_metrics(harness):
    assert harness.client.get("/health").json() == {"status": "alive"}
    ready = harness.client.get("/ready")
    assert ready.status_code == 200 and "fraud/v1" in ready.json()["references"]
    metrics = harness.client.get("/metrics").text
    for name in ("flywheel_drift_ingest_seconds_bucket", "flywheel_drift_ready 1.0", "flywheel_drift_backlog_rows"):
        assert name in metrics


def test_a_shift_is_flagged_per_feature_in_metrics(harness):
    harness.batch(synthetic_rows(500, 3, shift={"amount_log": 1.0}), synthetic_probabilities(500, 3))
    harness.sync()
    metrics = harness.client.get("/metrics").text
    assert 'flywheel_drift_feature_drift{feature="amount_log",model="fraud",version="v1"} 1.0' in metrics
    assert 'flywheel_drift_feature_drift{feature="txn_count_1h",model="fraud",version="v1"} 0.0' in metrics
    line = next(x for x in metrics.splitlines() if x.startswith('flywheel_drift_feature_p_value{feature="amount_log"'))
    assert float(line.split()[-1]) < 1e-10
    assert np.isfinite(float(line.split()[-1]))


def test_before_start_everything_but_health_answers_503(tmp_path, repo):
    from starlette.testclient import TestClient

    from flywheel_drift import DriftService, create_app

    client = TestClient(create_app(DriftService(make_settings(tmp_path)), start=False))
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    assert client.get("/v1/report").status_code == 503
    r = client.post("/v1/batch", json={"model": "fraud", "rows": [[0.0] * 19]})
    assert r.status_code == 503 and r.json()["type"] == "not_ready"


def test_an_unpublished_version_is_counted_under_one_label_not_analysed(harness):
    r = harness.batch(synthetic_rows(10, 4), synthetic_probabilities(10, 4), version="v77")
    assert r.status_code == 202
    harness.sync()
    metrics = harness.client.get("/metrics").text
    assert 'flywheel_drift_rows_without_reference_total{model="fraud",version="unpublished"} 10.0' in metrics
    assert "v77" not in metrics
