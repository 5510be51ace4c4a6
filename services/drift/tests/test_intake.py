"""Issue 11 at the HTTP boundary: out-of-range and wrong-typed fields are 4xx naming them, a sender's retry
of a CloudEvent is analysed once, the report answers while the analysis is stalled, and the transformer's
`unseen` flags are counted per version and field."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Harness, make_settings, synthetic_probabilities, synthetic_rows
from test_events import kserve, transformer_request, transformer_response


@pytest.mark.parametrize(("probabilities", "field"), [([1.5], "probabilities[0]"), ([0.2, -0.1], "probabilities[1]"),
                                                      (["0.5"], "probabilities"), ([True], "probabilities")])
def test_batch_probabilities_outside_0_1_or_not_numbers_are_refused_naming_the_field(harness, probabilities, field):
    r = harness.client.post("/v1/batch", headers=harness.writer,
                            json={"model": "fraud", "rows": synthetic_rows(len(probabilities), 0).tolist(),
                                  "probabilities": probabilities})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and r.json()["code"] == "bad_request"


def test_a_batch_value_beyond_float32_is_refused_not_turned_into_infinity(harness):
    rows = synthetic_rows(1, 0).tolist()
    rows[0][3] = 1e300
    r = harness.client.post("/v1/batch", headers=harness.writer, json={"model": "fraud", "rows": rows})
    assert r.status_code == 400 and r.json()["field"] == "rows"


def test_cloudevent_scores_outside_0_1_are_refused_naming_the_field(harness):
    body = json.loads(transformer_response(2))
    body["outputs"][0]["data"] = [0.1, 7.0]
    r = harness.event(kserve("response"), content=json.dumps(body).encode())
    assert r.status_code == 400 and r.json()["field"] == "outputs[1]"


@pytest.mark.parametrize(("labels", "field"), [
    ([{"id": 123, "label": 1}], "labels[0].id"),
    ([{"id": "t1", "label": 1}, {"id": "t2", "label": True}], "labels[1].label"),
    ([{"id": "t1", "label": 1.0}], "labels[0].label"),
    ([{"id": "t1", "label": "1"}], "labels[0].label"),
    ([{"id": "t1", "label": 1, "lable": 0}], "labels[0].lable"),
])
def test_wrong_typed_or_unknown_label_fields_are_a_400_not_accepted_0(harness, labels, field):
    r = harness.labels(labels)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and r.json()["type"] == "invalid_event"


def test_batch_ids_must_be_strings_and_unknown_batch_fields_are_named(harness):
    r = harness.batch(synthetic_rows(2, 0), ids=["t1", 2])
    assert r.status_code == 400 and r.json()["field"] == "ids[1]"
    r = harness.batch(synthetic_rows(2, 0), probabilty=[0.1, 0.2])
    assert r.status_code == 400 and r.json()["field"] == "probabilty"


def test_a_cloudevent_delivered_twice_is_analysed_once_and_counted(harness):
    request, response = (kserve("request"), transformer_request(3)), (kserve("response"), transformer_response(3))
    first = [harness.event(*request), harness.event(*response)]  # same ce-id: a pair, not duplicates
    assert [r.status_code for r in first] == [202, 202] and all("duplicate" not in r.json() for r in first)
    again = [harness.event(*request), harness.event(*response)]  # the logger retries both
    assert [r.status_code for r in again] == [202, 202]
    assert all(r.json() == {"accepted": 0, "id": "id-1", "duplicate": True} for r in again)
    version = harness.version()
    assert version["rows"] == 3 and version["predictions_logged"] == 3
    metrics = harness.client.get("/metrics").text
    assert "flywheel_drift_duplicate_events_total 2.0" in metrics
    assert "flywheel_drift_unpaired_events_total 0.0" in metrics  # the retry left no half waiting


def test_dedup_is_bounded_by_the_number_of_ids_remembered(tmp_path, repo):
    h = Harness(make_settings(tmp_path, dedup_events=1))
    try:
        for ce_id in ("a", "b", "a"):  # "a" was forgotten when "b" came
            assert "duplicate" not in h.event(kserve("request", **{"ce-id": ce_id}), transformer_request(1)).json()
        assert h.event(kserve("request", **{"ce-id": "a"}), transformer_request(1)).json()["duplicate"] is True
    finally:
        h.close()


def test_the_report_answers_while_the_analysis_is_stalled_with_its_age(harness):
    assert harness.batch(synthetic_rows(300, 0), synthetic_probabilities(300, 0)).status_code == 202
    harness.sync()
    with ThreadPoolExecutor(1) as pool, harness.service.processor.lock:  # the analysis stalls on its next item
        assert harness.batch(synthetic_rows(400, 1), synthetic_probabilities(400, 1)).status_code == 202
        # Before: the report took the processor's lock and waited here for as long as ingestion did.
        r = pool.submit(harness.client.get, "/v1/report").result(timeout=30)
        assert r.status_code == 200
        data = r.json()
        assert data["versions"][0]["rows"] == 300  # the latest published state, not the stalled batch
        assert data["backlog"]["rows"] == 400 and data["age_seconds"] >= 0 and data["computed_at"] > 0
        html = pool.submit(harness.client.get, "/report").result(timeout=30)
        assert html.status_code == 200
    assert harness.version()["rows"] == 700  # caught up once released


def _with_unseen(n: int, unseen: list) -> bytes:
    body = json.loads(transformer_response(n))
    body["outputs"].append({"name": "unseen", "datatype": "BYTES", "shape": [n], "data": unseen})
    return json.dumps(body).encode()


def test_unseen_inputs_are_counted_per_version_and_field_and_shown_in_the_report(harness):
    for i, unseen in enumerate(([["country"], [], ["country", "currency"], []], ["", "country"])):
        n = len(unseen)
        headers = {"ce-id": f"u{i}"}
        assert harness.event(kserve("request", **headers), transformer_request(n)).status_code == 202
        assert harness.event(kserve("response", **headers), _with_unseen(n, unseen)).status_code == 202
    # an older transformer says nothing: nothing is counted for it
    assert harness.event(kserve("response", **{"ce-id": "old"}), transformer_response(2)).status_code == 202
    version = harness.version()
    assert version["unseen_rows"] == 6
    assert version["unseen"] == {"country": {"count": 3, "share": 0.5}, "currency": {"count": 1, "share": 1 / 6}}
    metrics = harness.client.get("/metrics").text
    assert 'flywheel_drift_unseen_inputs_total{feature="country",model="fraud",version="v1"} 3.0' in metrics


def test_unseen_that_is_not_a_list_of_field_names_is_a_400(harness):
    r = harness.event(kserve("response"), _with_unseen(2, [["country"], [7]]))
    assert r.status_code == 400 and r.json()["field"] == "outputs.unseen.data[1]"
