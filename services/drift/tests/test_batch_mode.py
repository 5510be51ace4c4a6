"""CloudEvents batch mode (HTTP binding 3.3): many structured-mode events in one request, as the transformer sends
its records. Each event is read, deduplicated, spooled and analysed as the same event sent alone; a batch is all
or nothing at the door (one bad event: 400 naming its index, nothing kept; no room: 429, nothing kept)."""

from __future__ import annotations

import base64
import json
import signal
from typing import Any

import httpx
import numpy as np
import pytest

from flywheel_contracts.auth import TokenFile
from flywheel_contracts.ports import free_port
from flywheel_drift import InvalidEvent
from flywheel_drift._errors import UnsupportedEventType
from flywheel_drift._events import BATCH, parse_cloudevent, parse_cloudevent_batch

from conftest import Harness, make_settings
from test_events import transformer_request, transformer_response
from test_process import start
from test_restart import crash


def envelope(role: str, ce_id: str = "id-1", n: int = 2, base64_data: bool = False, **extra: Any) -> dict[str, Any]:
    """A structured-mode event as the transformer puts it in a batch."""
    body = (transformer_request if role == "request" else transformer_response)(n)
    event: dict[str, Any] = {"specversion": "1.0", "id": ce_id, "source": "urn:flywheel:transformer",
                             "type": f"org.kubeflow.serving.inference.{role}", "time": "2026-11-23T00:00:01.5Z",
                             "datacontenttype": "application/json", "inferenceservicename": "fraud"}
    if base64_data:
        event["data_base64"] = base64.b64encode(body).decode()
    else:
        event["data"] = json.loads(body)
    return {**event, **extra}


def pair(ce_id: str, n: int = 2) -> list[dict[str, Any]]:
    return [envelope("request", ce_id, n), envelope("response", ce_id, n)]


def post(h: Harness, events: Any, path: str = "/") -> Any:
    return h.client.post(path, content=json.dumps(events).encode(), headers={"content-type": BATCH, **h.writer})


# ---- the parser ---------------------------------------------------------------------------------------------------

def test_each_event_of_a_batch_parses_as_the_same_event_sent_alone_in_structured_mode():
    events = [*pair("a"), envelope("request", "b", base64_data=True)]
    parsed = parse_cloudevent_batch(json.dumps(events).encode(), 0.0)
    assert [kept for _, kept in parsed] == events  # what the spool keeps: each envelope as it came
    for (half, _), event in zip(parsed, events, strict=True):
        alone = parse_cloudevent({"content-type": "application/cloudevents+json"}, json.dumps(event).encode(), 0.0)
        assert (half.id, half.role, half.model, half.version, half.time, half.row_ids) == (
            alone.id, alone.role, alone.model, alone.version, alone.time, alone.row_ids)
        for got, expected in ((half.x, alone.x), (half.probabilities, alone.probabilities)):
            assert (got is None and expected is None) or np.array_equal(got, expected)


@pytest.mark.parametrize(("body", "field"), [
    (b"[]", "body"),
    (b'{"specversion": "1.0"}', "body"),
    (b"[not json", "body"),
    (json.dumps([envelope("request"), 7]).encode(), "[1]"),
    (json.dumps([envelope("request"), {**envelope("response"), "id": ""}]).encode(), "[1].id"),
    (json.dumps([{**envelope("request"), "specversion": "0.1"}]).encode(), "[0].specversion"),
    (json.dumps([envelope("request"), {**envelope("response"), "time": "yesterday"}]).encode(), "[1].time"),
    (json.dumps([{**envelope("request"), "data": [1, 2]}]).encode(), "[0].data"),
    (json.dumps([{**envelope("request"), "data": {"instances": [[1, 2], [3]]}}]).encode(), "[0].data.instances"),
    (json.dumps([envelope("response"), {**envelope("request"), "data_base64": "%%"}]).encode(), "[1].data_base64"),
])
def test_a_bad_event_refuses_the_whole_batch_naming_its_index_and_field(body, field):
    with pytest.raises(InvalidEvent) as caught:
        parse_cloudevent_batch(body, 0.0)
    assert caught.value.field == field
    if field.startswith("["):
        assert caught.value.message.startswith(f"batch event {field.split('.')[0]}: ")


def test_an_event_type_the_sink_does_not_read_is_refused_with_its_index():
    with pytest.raises(UnsupportedEventType) as caught:
        parse_cloudevent_batch(json.dumps([envelope("request"), {**envelope("response"), "type": "x"}]).encode(), 0.0)
    assert caught.value.field == "[1].type"


# ---- through the service ------------------------------------------------------------------------------------------

def test_a_batch_of_pairs_is_analysed_as_the_same_events_sent_one_by_one(harness):
    r = post(harness, [*pair("a", 3), *pair("b", 2)])
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 10, "events": 4, "duplicates": 0, "dropped": 0, "seq": 4}
    version = harness.version()
    assert version["rows"] == 5
    metrics = harness.client.get("/metrics").text
    assert 'flywheel_drift_events_total{model="fraud"} 4.0' in metrics
    assert "flywheel_drift_unpaired_events_total 0.0" in metrics


def test_the_v1_events_route_takes_batches_too_and_the_token_is_required(harness):
    assert post(harness, pair("a"), path="/v1/events").status_code == 202
    r = harness.client.post("/", content=json.dumps(pair("b")).encode(), headers={"content-type": BATCH})
    assert r.status_code == 401


def test_a_retried_batch_is_analysed_once_even_when_it_overlaps_what_was_sent_alone(harness):
    assert post(harness, pair("a")).status_code == 202
    again = post(harness, [*pair("a"), *pair("b")])  # a sender's retry, with a new record behind it
    assert again.status_code == 202
    assert again.json() == {"accepted": 4, "events": 2, "duplicates": 2, "dropped": 0, "seq": 4}
    only_duplicates = post(harness, pair("b"))
    assert only_duplicates.json() == {"accepted": 0, "events": 0, "duplicates": 2, "dropped": 0}
    assert harness.version()["rows"] == 4
    assert "flywheel_drift_duplicate_events_total 4.0" in harness.client.get("/metrics").text


def test_a_bad_event_in_a_batch_keeps_nothing_of_it_and_its_retry_is_accepted(harness):
    bad = [*pair("a"), {**envelope("request", "b"), "data": {"instances": [["x"]]}}]
    r = post(harness, bad)
    assert r.status_code == 400
    assert r.json()["field"] == "[2].data.instances" and r.json()["type"] == "invalid_event"
    assert post(harness, pair("a")).json()["events"] == 2  # "a" was not marked seen by the refused batch
    assert harness.version()["rows"] == 2


def test_rows_of_the_wrong_width_or_an_unmonitored_model_refuse_the_batch_naming_the_event(harness):
    narrow = envelope("request", "w", data={"instances": [[1.0, 2.0]]})
    r = post(harness, [*pair("a"), narrow])
    assert r.status_code == 400 and r.json()["field"] == "[2].data.inputs"
    r = post(harness, [envelope("request", "m", inferenceservicename="other")])
    assert r.status_code == 404 and r.json()["field"] == "[0].model"


def test_an_event_of_an_unpublished_version_is_dropped_and_counted_the_rest_kept(harness):
    stale = [envelope("request", "old", data={**json.loads(transformer_request(3)),
                                              "parameters": {"metadata_version": "v9"}})]
    r = post(harness, [*pair("a"), *stale])
    assert r.status_code == 202 and r.json() == {"accepted": 4, "events": 2, "duplicates": 0, "dropped": 3, "seq": 2}


def test_a_batch_without_room_in_the_backlog_is_refused_whole_and_accepted_on_retry(tmp_path, repo):
    h = Harness(make_settings(tmp_path, max_backlog_rows=1000))
    try:
        with h.service.processor.lock:  # the analysis stalls: nothing is released meanwhile
            r = post(h, [*pair("a", 300), *pair("b", 300)])  # 1200 rows > 1000: the fourth event does not fit
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert h.service.backlog.snapshot().rows == 0  # the three reserved before the refusal were released
            assert post(h, pair("a", 300)).status_code == 202  # nothing of the refused batch was marked seen
        assert h.version()["rows"] == 300
    finally:
        h.close()


def test_batched_events_accepted_but_not_analysed_are_replayed_after_a_crash(tmp_path, repo):
    settings = make_settings(tmp_path, durable=True)
    first = Harness(settings)
    first.service.processor.lock.acquire()  # analysis stalls: everything stays in the spool
    try:
        events = [*pair("a", 2), envelope("request", "b", n=3, base64_data=True)]
        assert post(first, events).status_code == 202
        crash(first)
        second = Harness(settings)
        try:
            assert second.service.replayed == 3
            assert second.version()["rows"] == 2  # "b" waits for its response, not lost
            assert len(second.service.processor.pairer.pending) == 1
            assert post(second, pair("a", 2)).json()["duplicates"] == 2  # ids replayed are remembered
        finally:
            second.close()
    finally:
        first.service.processor.lock.release()


def test_a_real_process_takes_a_batch_through_admission_and_its_body_limit(tmp_path, repo):
    process, url, _ = start(tmp_path, free_port(), FLYWHEEL_DRIFT_MAX_BODY_BYTES="65536")
    try:
        writer = {"content-type": BATCH, **TokenFile(tmp_path / "tokens" / "drift-ingest").header()}
        r = httpx.post(url, content=json.dumps([*pair("a"), *pair("b")]).encode(), headers=writer)
        assert r.status_code == 202 and r.json()["events"] == 4
        too_big = json.dumps([event for i in range(40) for event in pair(str(i), 20)]).encode()
        assert len(too_big) > 65536
        r = httpx.post(url, content=too_big, headers=writer)
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        assert httpx.post(url, content=b"[]", headers=writer).status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
