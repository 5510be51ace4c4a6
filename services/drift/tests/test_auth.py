"""Who may write: rows need the drift ingest token, labels the drift labels token, neither the other's;
reports, health and metrics stay open. Every attack here goes through the real ASGI app."""

import os

import pytest

from flywheel_contracts.auth import write_token

from conftest import Harness, make_settings, synthetic_probabilities, synthetic_rows
from test_events import kserve, transformer_request

ROWS = synthetic_rows(600, 5)
WRITE_PATHS = ("/", "/v1/events", "/v1/batch")


def post_rows(h: Harness, path: str, headers: dict[str, str]):
    if path == "/v1/batch":
        return h.client.post(path, json={"model": "fraud", "rows": ROWS.tolist()}, headers=headers)
    return h.client.post(path, headers={**kserve("request"), **headers}, content=transformer_request(3))


def assert_refused(r, credential: str) -> None:
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="flywheel-drift"'
    assert r.json()["type"] == r.json()["code"] == "unauthorized" and credential in r.json()["error"]
    assert set(r.json()) == {"error", "code", "type"}  # nothing about the request: no ids, no counts


def test_rows_without_the_ingest_token_are_refused_and_never_analysed(harness):
    forged = {"Authorization": "Bearer forged"}
    for path in WRITE_PATHS:
        for headers in ({}, forged, harness.labeller, {"Authorization": harness.writer["Authorization"][7:]}):
            assert_refused(post_rows(harness, path, headers), "drift ingest token")
    assert harness.version()["rows"] == 0
    metrics = harness.client.get("/metrics").text
    assert "flywheel_drift_unauthorized_requests_total 12.0" in metrics
    assert "flywheel_drift_rows_total{" not in metrics and "flywheel_drift_events_total{" not in metrics
    for path in WRITE_PATHS:  # the holder of the ingest token gets in on every intake path
        assert post_rows(harness, path, harness.writer).status_code == 202


def test_the_ingest_token_cannot_label_and_forged_labels_do_not_pre_empt_the_real_one(harness):
    ids = [f"t{i}" for i in range(20)]
    assert harness.batch(synthetic_rows(20, 1), synthetic_probabilities(20, 1), ids).status_code == 202
    harness.sync()
    forgeries = [{"id": i, "label": 0} for i in [*ids, "t-not-yet-scored"]]
    for headers in ({}, {"Authorization": "Bearer forged"}, harness.writer):
        r = harness.client.post("/v1/labels", json={"labels": forgeries}, headers=headers)
        assert_refused(r, "drift labels token")
        assert "t1" not in r.text and "t-not-yet" not in r.text  # whether an id was scored stays unsaid
    assert harness.version()["predictions_labelled"] == 0
    # The chargebacks arrive: every one is accepted, none is a "conflict" with a forged label.
    genuine = harness.labels([{"id": i, "label": 1} for i in ids])
    assert genuine.json() == {"accepted": 20, "duplicates": 0, "conflicts": [], "unmatched": 0}


def test_without_token_files_the_writing_routes_are_closed(tmp_path, repo):
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    for ingest, labels in ((None, None), (empty, tmp_path / "missing")):
        h = Harness(make_settings(tmp_path, ingest_token_file=ingest, labels_token_file=labels))
        try:
            for path in WRITE_PATHS:
                r = post_rows(h, path, {"Authorization": "Bearer anything"})
                assert_refused(r, "closed: no drift ingest token is configured (FLYWHEEL_DRIFT_INGEST_TOKEN_FILE)")
            r = h.client.post("/v1/labels", json={"labels": [{"id": "t1", "label": 1}]},
                              headers={"Authorization": "Bearer anything"})
            assert_refused(r, "closed: no drift labels token is configured (FLYWHEEL_DRIFT_LABELS_TOKEN_FILE)")
        finally:
            h.close()


def test_a_rotated_ingest_token_takes_effect_without_a_restart(harness):
    old = dict(harness.writer)
    path = harness.service.settings.ingest_token_file
    os.unlink(path)
    write_token(path)
    assert_refused(post_rows(harness, "/v1/batch", old), "wrong token")
    assert harness.batch(ROWS).status_code == 401  # the harness still holds the old token
    harness.writer = {"Authorization": f"Bearer {path.read_text().strip()}"}
    assert harness.batch(ROWS).status_code == 202


def test_reports_health_and_metrics_stay_open_and_the_html_report_forbids_scripts(harness):
    assert harness.batch(ROWS, synthetic_probabilities(600, 5)).status_code == 202
    harness.sync()
    for path in ("/v1/report", "/v1/report?model=fraud&version=v1", "/report", "/health", "/ready", "/metrics"):
        assert harness.client.get(path).status_code == 200, path
    assert harness.client.get("/v1/report").json()["versions"][0]["rows"] == 600
    csp = harness.client.get("/report").headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp


@pytest.mark.parametrize("path", ["/v1/labels", "/v1/batch"])
def test_the_token_is_checked_before_the_body_is_read(harness, path):
    r = harness.client.post(path, content=b"x" * (harness.service.settings.max_body_bytes + 1),
                            headers={"content-type": "text/plain"})
    assert r.status_code == 401  # not 413 or 415: an anonymous caller learns nothing about limits or formats
