"""The HTTP contract: what is accepted, what is refused and how, and what can be read back."""

import json

import numpy as np

from flywheel_contracts.auth import TokenFile

from conftest import Harness, make_settings, publish_version, synthetic_probabilities, synthetic_rows
from test_events import kserve, transformer_request, transformer_response


def test_transformer_cloudevents_are_accepted_after_they_are_persisted(harness):
    for role, body in (("request", transformer_request(3)), ("response", transformer_response(3))):
        r = harness.event(kserve(role), content=body)
        assert r.status_code == 202
        assert r.json()["id"] == "id-1" and r.json()["seq"] > 0
    # ...on the alias path too
    headers = kserve("request", **{"ce-id": "id-9"})
    r = harness.event(headers, content=transformer_request(1), path="/v1/events")
    assert r.status_code == 202
    harness.sync()
    metrics = harness.client.get("/metrics").text
    assert 'flywheel_drift_events_total{model="fraud"} 3.0' in metrics
    assert 'flywheel_drift_rows_total{model="fraud",version="v1"} 3.0' in metrics


def test_malformed_events_get_a_4xx_naming_the_problem_and_are_counted(harness):
    r = harness.event({"content-type": "application/json"}, content=b"{}")
    assert r.status_code == 400
    assert r.json() == {"error": "missing CloudEvent attribute header ce-specversion", "code": "bad_request",
                        "type": "invalid_event", "field": "ce-specversion"}
    r = harness.event(kserve("request"), content=b'{"instances": [[1, 2, 3]]}')
    assert r.status_code == 400 and "takes 19" in r.json()["error"]
    r = harness.event({**kserve("request"), "content-type": "text/csv"}, content=b"1,2")
    assert r.status_code == 415
    r = harness.event(kserve("request", **{"ce-inferenceservicename": "churn"}), content=transformer_request(1))
    assert r.status_code == 404 and r.json()["field"] == "model"
    r = harness.batch(np.ones((1, 19)), np.array([0.1, 0.2]))
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
    first = harness.labels(labels).json()
    assert first == {"accepted": n, "duplicates": 0, "conflicts": [], "unmatched": 0}
    again = harness.labels(labels[:10]).json()
    assert again == {"accepted": 0, "duplicates": 10, "conflicts": [], "unmatched": 0}
    flipped = harness.labels([{"id": "t1", "label": 1}]).json()
    assert flipped["conflicts"] == ["t1"]
    version = harness.version()
    assert version["predictions_labelled"] == n and version["predictions_logged"] == n
    assert version["performance"]["rows"] == n and version["performance"]["coverage"] == 1.0
    bad = harness.labels([{"id": "t1", "label": 2}])
    assert bad.status_code == 400 and bad.json()["field"] == "labels[0].label"


def test_a_label_before_its_prediction_is_joined_when_the_prediction_comes(harness):
    assert harness.labels([{"id": "early", "label": 1}]).json()["unmatched"] == 1
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

    settings = make_settings(tmp_path)
    client = TestClient(create_app(DriftService(settings), start=False))
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    assert client.get("/v1/report").status_code == 503
    r = client.post("/v1/batch", json={"model": "fraud", "rows": [[0.0] * 19]},
                    headers=TokenFile(settings.ingest_token_file).header())
    assert r.status_code == 503 and r.json()["type"] == "not_ready"


def test_a_batch_naming_an_unpublished_version_gets_404_naming_the_version(harness):
    r = harness.batch(synthetic_rows(10, 4), synthetic_probabilities(10, 4), version="v77")
    assert r.status_code == 404
    assert r.json()["type"] == "unknown_version" and r.json()["field"] == "version" and "'v77'" in r.json()["error"]
    long = harness.batch(synthetic_rows(1, 4), version="v" * 10_000)
    assert long.status_code == 404 and len(long.text) < 400  # the caller's string is not echoed in full


def test_a_cloudevent_naming_an_unpublished_version_is_counted_and_dropped(harness):
    r = harness.event(kserve("request"), content=transformer_request(3).replace(b'"v1"', b'"v77"'))
    assert r.status_code == 202 and r.json()["accepted"] == 0 and r.json()["dropped"] == 3
    harness.sync()
    metrics = harness.client.get("/metrics").text
    assert 'flywheel_drift_rows_without_reference_total{model="fraud",version="unpublished"} 3.0' in metrics
    assert "v77" not in metrics
    assert harness.service.labels.totals("fraud", "v77") == (0, 0)


def test_fifty_invented_versions_create_no_metric_series_and_no_state(harness):
    for role, body in (("request", transformer_request(2)), ("response", transformer_response(2))):
        assert harness.event(kserve(role), content=body).status_code == 202  # one genuine v1 inference
    harness.sync()
    assert harness.labels([{"id": "t0", "label": 0}]).json()["accepted"] == 1
    harness.sync()
    before = series(harness.client.get("/metrics").text)
    loader, processor = harness.service.loader, harness.service.processor
    state_before = (len(loader._failures), len(loader._cache), len(processor.monitors))
    for k in range(50):
        invented = f"v{1000 + k}".encode()
        for role, body in (("request", transformer_request(2)), ("response", transformer_response(2))):
            headers = kserve(role, **{"ce-id": f"attack-{k}"})
            assert harness.event(headers, content=body.replace(b'"v1"', b'"' + invented + b'"')).status_code == 202
        assert harness.batch(synthetic_rows(2, k), version=invented.decode()).status_code == 404
        assert harness.labels([{"id": f"attack-{k}", "label": 1}]).status_code == 200
    harness.sync()
    harness.service.processor.evaluate_performance()
    after = series(harness.client.get("/metrics").text)
    # values moved (rows dropped, unmatched labels); the one new series is the bounded "unpublished" label
    assert after - before == {'flywheel_drift_rows_without_reference_total{model="fraud",version="unpublished"}'}
    assert "v10" not in harness.client.get("/metrics").text
    assert (len(loader._failures), len(loader._cache), len(processor.monitors)) == state_before
    rows = harness.service.labels._conn.execute("SELECT DISTINCT version FROM predictions").fetchall()
    assert rows == [("v1",)]


def series(metrics: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in metrics.splitlines() if line and not line.startswith("#")
            and "_created" not in line.split("{")[0]}


def test_labels_waiting_for_their_prediction_are_capped_oldest_first(tmp_path, repo):
    h = Harness(make_settings(tmp_path, max_orphan_labels=100))
    try:
        for start in range(0, 300, 50):
            r = h.labels([{"id": f"early-{i}", "label": 1} for i in range(start, start + 50)])
            assert r.json()["unmatched"] == 50
        waiting = [k for (k,) in h.service.labels._conn.execute("SELECT key FROM orphan_labels ORDER BY rowid")]
        assert waiting == [f"early-{i}" for i in range(200, 300)]  # the newest 100 are kept
        assert "flywheel_drift_evicted_orphan_labels_total 200.0" in h.client.get("/metrics").text
        h.batch(synthetic_rows(2, 1), synthetic_probabilities(2, 1), ["early-0", "early-299"])
        h.sync()
        assert h.version()["predictions_labelled"] == 1  # early-299 still joined; early-0 was evicted
    finally:
        h.close()


def test_version_monitors_past_the_cap_are_evicted_least_recently_used_first(tmp_path, repo):
    for seed in (1, 2):
        publish_version(repo, seed=seed)  # v2, v3
    h = Harness(make_settings(tmp_path, max_tracked_versions=2))
    try:
        for version in ("v1", "v2", "v3", "v2"):
            assert h.batch(synthetic_rows(10, 0), version=version).status_code == 202
        h.sync()
        assert list(h.service.processor.monitors) == [("fraud", "v3"), ("fraud", "v2")]
        assert "flywheel_drift_evicted_versions_total 2.0" in h.client.get("/metrics").text
        h.service.processor.checkpoint()
        assert len(h.service.loader._cache) <= 2
    finally:
        h.close()


def test_a_bug_inside_a_handler_is_a_500_with_a_generic_body_and_one_logged_traceback(harness, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("secret detail from a bug")

    monkeypatch.setattr(harness.service, "report", broken)
    r = harness.client.get("/v1/report")
    assert r.status_code == 500
    assert r.json() == {"error": "internal error: the service logged the details", "code": "internal"}
    logged = [rec for rec in caplog.records if rec.exc_info and rec.exc_info[0] is RuntimeError]
    assert len(logged) == 1


def test_an_unmapped_request_error_is_a_500_not_a_guessed_400():
    from flywheel_drift._errors import RequestError, error_body, status_of

    assert status_of(RequestError("a request error without a status")) == 500
    assert error_body(RequestError("x"))["code"] == "internal"


def test_a_wrong_method_is_a_json_405_with_allow_and_an_unknown_path_a_json_404(harness):
    for method, path, allow in (("GET", "/v1/batch", "POST"), ("PUT", "/v1/labels", "POST"),
                                ("DELETE", "/v1/report", "GET, HEAD"), ("GET", "/", "POST")):
        credential = harness.labeller if path == "/v1/labels" else harness.writer  # the credential is checked first
        r = harness.client.request(method, path, headers=credential)
        assert r.status_code == 405, (method, path)
        assert r.headers["allow"] == allow
        assert r.json() == {"error": f"{method} is not allowed on {path}; use {allow}", "code": "method_not_allowed",
                            "type": "method_not_allowed"}
    r = harness.client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json()["code"] == "not_found" and r.json()["type"] == "unknown_route"
