import asyncio
import json
from datetime import datetime, timezone

import httpx
from cloudevents.http import from_http
from prometheus_client import CollectorRegistry

from flywheel_contracts.auth import TokenFile
from flywheel_transformer._events import (
    BATCH_CONTENT_TYPE,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    EventAttributes,
    EventSink,
    InferenceRecord,
    batch_body,
    event_headers,
)
from flywheel_transformer._metrics import Metrics

from conftest import run

ATTRIBUTES = EventAttributes(source="urn:test", namespace="ns", inference_service="fraud-isvc", endpoint="canary")


def record(inference_id="id-1", model_version=None):
    return InferenceRecord(
        inference_id,
        datetime(2026, 11, 23, 12, 0, 1, 500, tzinfo=timezone.utc),
        {"id": inference_id, "inputs": []},
        {"id": inference_id, "outputs": []},
        model_version,
    )


def value(registry, name):
    return registry.get_sample_value(name, {"model": "fraud"}) or 0.0


def test_headers_are_kserve_loggers_binary_cloudevent_headers():
    headers = event_headers(ATTRIBUTES, record(), REQUEST_TYPE)
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "id-1",
        "ce-type": "org.kubeflow.serving.inference.request",
        "ce-source": "urn:test",
        "ce-time": "2026-11-23T12:00:01.000500Z",
        "ce-inferenceservicename": "fraud-isvc",
        "ce-namespace": "ns",
        "ce-component": "transformer",
        "ce-endpoint": "canary",
        "ce-metadata": "{}",
        "content-type": "application/json",
    }
    event = from_http(headers, json.dumps({"a": 1}).encode())  # the CloudEvents SDK accepts it as binary mode
    assert event["id"] == "id-1" and event["inferenceservicename"] == "fraud-isvc"


def sink_with(handler, queue_size=10, registry=None, token=None, retry_s=0.0, mode="binary", batch_max=64,
              linger_s=0.0):
    """A sink of one sender over a mock transport; binary mode unless the test is about batches."""
    registry = registry or CollectorRegistry()
    sink = EventSink(
        "http://sink/",
        ATTRIBUTES,
        Metrics(registry),
        "fraud",
        queue_size,
        0.5,
        senders=1,
        transport=httpx.MockTransport(handler),
        token=token,
        retry_s=retry_s,
        mode=mode,
        batch_max=batch_max,
        linger_s=linger_s,
    )
    return sink, registry


def test_a_record_is_posted_as_a_request_then_a_response_event_sharing_the_id():
    seen = []

    def handler(request):
        seen.append((request.headers["ce-type"], request.headers["ce-id"], json.loads(request.content)))
        return httpx.Response(202)

    async def go():
        sink, registry = sink_with(handler)
        assert sink.submit(record("abc"))
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert seen == [
        (REQUEST_TYPE, "abc", {"id": "abc", "inputs": []}),
        (RESPONSE_TYPE, "abc", {"id": "abc", "outputs": []}),
    ]
    assert value(registry, "flywheel_transformer_events_sent_total") == 2


def test_a_full_queue_drops_the_whole_record_and_counts_both_events():
    release, posting = asyncio.Event(), asyncio.Event()

    async def handler_async(request):
        posting.set()
        await release.wait()
        return httpx.Response(200)

    class Blocking(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            return await handler_async(request)

    async def go():
        registry = CollectorRegistry()
        sink = EventSink(
            "http://sink/", ATTRIBUTES, Metrics(registry), "fraud", 1, 5.0, senders=1, transport=Blocking(),
            mode="binary",
        )
        accepted = [sink.submit(record("r0"))]
        async with asyncio.timeout(10):  # a bound on the wait, not on how fast the sender is
            await posting.wait()  # the sender took r0 and is blocked on the sink
        accepted += [sink.submit(record(f"r{i}")) for i in (1, 2, 3)]  # r1 waits in the queue of one
        release.set()
        await sink.drain()
        await sink.aclose()
        return accepted, registry

    accepted, registry = run(go())
    assert accepted == [True, True, False, False]
    assert value(registry, "flywheel_transformer_events_dropped_total") == 4
    assert value(registry, "flywheel_transformer_events_sent_total") == 4


def test_sink_errors_and_timeouts_are_counted_not_raised():
    def handler(request):
        if request.headers["ce-id"] == "erring":
            return httpx.Response(500)
        raise httpx.ReadTimeout("slow sink")

    async def go():
        sink, registry = sink_with(handler)
        sink.submit(record("erring"))
        sink.submit(record("slow"))
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert value(registry, "flywheel_transformer_events_failed_total") == 4  # retries off: each record given up whole
    assert value(registry, "flywheel_transformer_events_sent_total") == 0
    assert value(registry, "flywheel_transformer_events_submitted_total") == 4


def test_a_sink_that_is_briefly_down_loses_no_event_each_is_retried_until_taken():
    answers = {"tries": 0}

    def handler(request):
        answers["tries"] += 1
        if answers["tries"] <= 3:  # refused connection, then two 503s, as a restarting drift pod gives
            if answers["tries"] == 1:
                raise httpx.ConnectError("connection refused")
            return httpx.Response(503)
        return httpx.Response(202)

    async def go():
        sink, registry = sink_with(handler, retry_s=30)
        sink.submit(record())
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert value(registry, "flywheel_transformer_events_sent_total") == 2
    assert value(registry, "flywheel_transformer_events_retried_total") == 3
    assert value(registry, "flywheel_transformer_events_failed_total") == 0


def test_a_refused_event_is_not_retried_and_a_transient_failure_is_given_up_after_the_retry_time():
    def refuse(request):
        return httpx.Response(400 if request.headers["ce-type"] == REQUEST_TYPE else 503)

    async def go():
        sink, registry = sink_with(refuse, retry_s=0.25)  # tries at 0, 0.1, 0.3 s: the third would pass 0.25
        sink.submit(record())
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert value(registry, "flywheel_transformer_events_failed_total") == 2
    assert value(registry, "flywheel_transformer_events_retried_total") == 1  # only the 503, once
    assert value(registry, "flywheel_transformer_events_sent_total") == 0


def test_a_record_whose_retry_budget_runs_out_is_given_up_whole_never_half_a_pair():
    posts = []

    def handler(request):
        posts.append((request.headers["ce-id"], request.headers["ce-type"]))
        if len(posts) <= 2:  # down for the request event's two tries, back right after the last one
            return httpx.Response(503)
        return httpx.Response(202)

    async def go():
        sink, registry = sink_with(handler, retry_s=0.25)  # tries at 0 and 0.1 s; one at 0.3 s would pass 0.25
        sink.submit(record("lost"))
        await sink.drain()
        sink.submit(record("next"))
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    # The response of "lost" is not posted to the sink that is back: it would be half a pair, its request gone.
    assert posts == [("lost", REQUEST_TYPE), ("lost", REQUEST_TYPE), ("next", REQUEST_TYPE), ("next", RESPONSE_TYPE)]
    assert value(registry, "flywheel_transformer_events_failed_total") == 2
    assert value(registry, "flywheel_transformer_events_sent_total") == 2
    assert value(registry, "flywheel_transformer_events_submitted_total") == 4


def test_the_version_that_scored_is_the_ce_modelversion_extension_of_both_events():
    scored = InferenceRecord("id-2", record().time, {"inputs": []}, {"outputs": []}, model_version="v3")
    for ce_type in (REQUEST_TYPE, RESPONSE_TYPE):
        headers = event_headers(ATTRIBUTES, scored, ce_type)
        assert headers["ce-modelversion"] == "v3"
        assert from_http(headers, b"{}")["modelversion"] == "v3"  # a valid CloudEvents extension attribute
    assert "ce-modelversion" not in event_headers(ATTRIBUTES, record(), REQUEST_TYPE)  # version unknown: omitted


def test_each_event_carries_the_drift_ingest_token_and_a_401_is_a_failed_send(tmp_path):
    path = tmp_path / "drift-ingest"
    path.write_text("ingest-token\n")
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(202 if request.headers["ce-type"] == REQUEST_TYPE else 401)

    async def go():
        sink, registry = sink_with(handler, token=TokenFile(path))
        sink.submit(record())
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert seen == ["Bearer ingest-token", "Bearer ingest-token"]
    assert value(registry, "flywheel_transformer_events_sent_total") == 1
    assert value(registry, "flywheel_transformer_events_failed_total") == 1


class Hung(httpx.AsyncBaseTransport):
    """A sink that never answers."""

    async def handle_async_request(self, request):
        await asyncio.Event().wait()


def test_close_sends_what_is_queued_and_counts_nothing_unsent():
    async def go():
        sink, registry = sink_with(lambda request: httpx.Response(202))
        for i in range(3):
            sink.submit(record(f"r{i}"))
        report = await sink.close(deadline_s=10)
        return report, registry

    report, registry = run(go())
    assert (report.sent, report.failed, report.unsent) == (6, 0, 0)
    assert value(registry, "flywheel_transformer_events_unsent_total") == 0


def test_close_gives_up_at_its_deadline_and_counts_the_queued_and_in_flight_events_unsent():
    async def go():
        registry = CollectorRegistry()
        sink = EventSink("http://sink/", ATTRIBUTES, Metrics(registry), "fraud", 10, 30.0, senders=1, transport=Hung(),
                         mode="binary")
        for i in range(3):
            sink.submit(record(f"r{i}"))
        report = await sink.close(deadline_s=0.05)
        return report, registry

    report, registry = run(go())
    assert (report.sent, report.failed, report.unsent) == (0, 0, 6)  # 2 queued records + 1 in flight, 2 events each
    assert value(registry, "flywheel_transformer_events_unsent_total") == 6


# ---- batch mode (the default): what is queued goes out as one CloudEvents batch -----------------------------------

def batch_events(request):
    assert request.headers["content-type"] == BATCH_CONTENT_TYPE
    return json.loads(request.content)


def test_a_batch_holds_both_events_of_each_record_as_structured_mode_events_with_the_same_attributes():
    events = json.loads(batch_body(ATTRIBUTES, [record("a", "v3"), record("b")]))
    assert [(e["id"], e["type"]) for e in events] == [
        ("a", REQUEST_TYPE), ("a", RESPONSE_TYPE), ("b", REQUEST_TYPE), ("b", RESPONSE_TYPE)]
    for event in events:
        # the CloudEvents SDK reads each as a structured-mode event
        parsed = from_http({"content-type": "application/cloudevents+json"}, json.dumps(event).encode())
        binary = event_headers(ATTRIBUTES, record(event["id"], "v3" if event["id"] == "a" else None), event["type"])
        assert {f"ce-{k}": v for k, v in event.items() if k not in ("data", "datacontenttype")} == {
            k: v for k, v in binary.items() if k != "content-type"}  # the attributes binary mode sends as headers
        assert event["datacontenttype"] == "application/json" and parsed.data == event["data"]
    assert events[0]["modelversion"] == events[1]["modelversion"] == "v3" and "modelversion" not in events[2]
    assert events[0]["data"] == {"id": "a", "inputs": []} and events[1]["data"] == {"id": "a", "outputs": []}


def test_a_sender_posts_what_is_queued_in_one_batch_up_to_the_maximum():
    posts = []

    def handler(request):
        posts.append([(e["id"], e["type"]) for e in batch_events(request)])
        return httpx.Response(202)

    async def go():
        sink, registry = sink_with(handler, mode="batch", batch_max=2)
        for i in range(5):  # queued before the sender runs: it takes what is there, two records at a time
            sink.submit(record(f"r{i}"))
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert [len(post) for post in posts] == [4, 4, 2]
    assert [event for post in posts for event in post] == [
        (f"r{i}", t) for i in range(5) for t in (REQUEST_TYPE, RESPONSE_TYPE)]  # oldest first, pairs together
    assert value(registry, "flywheel_transformer_events_sent_total") == 10


def test_a_lone_record_is_posted_at_once_not_held_back_for_a_fuller_batch():
    posts = []

    def handler(request):
        posts.append(len(batch_events(request)))
        return httpx.Response(202)

    async def go():
        sink, _ = sink_with(handler, mode="batch")
        sink.submit(record("alone"))
        await sink.drain()  # no wait for more records: the one queued is sent
        sink.submit(record("next"))
        await sink.drain()
        await sink.aclose()

    run(go())
    assert posts == [2, 2]


def test_with_a_linger_records_arriving_meanwhile_share_the_batch_and_a_lone_one_still_goes_out():
    posts = []

    def handler(request):
        posts.append([e["id"] for e in batch_events(request)][::2])
        return httpx.Response(202)

    async def go():
        sink, _ = sink_with(handler, mode="batch", batch_max=3, linger_s=0.5)
        sink.submit(record("a"))
        await asyncio.sleep(0)  # the sender takes "a" and lingers
        sink.submit(record("b"))
        sink.submit(record("c"))  # the batch is full: posted without waiting out the linger
        sink.submit(record("d"))  # alone: posted once its linger ends
        await sink.drain()
        await sink.aclose()

    run(go())
    assert posts == [["a", "b", "c"], ["d"]]


def test_a_batch_that_fails_transiently_is_retried_whole_and_nothing_is_lost():
    posts = []

    def handler(request):
        posts.append(len(batch_events(request)))
        if len(posts) == 1:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(503) if len(posts) == 2 else httpx.Response(202)

    async def go():
        sink, registry = sink_with(handler, retry_s=30, mode="batch")
        for i in range(3):
            sink.submit(record(f"r{i}"))
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert posts == [6, 6, 6]
    assert value(registry, "flywheel_transformer_events_retried_total") == 2  # posts tried again
    assert value(registry, "flywheel_transformer_events_sent_total") == 6
    assert value(registry, "flywheel_transformer_events_failed_total") == 0


def test_a_refused_batch_counts_all_its_events_failed_and_is_not_retried():
    posts = []

    def handler(request):
        posts.append(len(batch_events(request)))
        return httpx.Response(400, json={"error": "batch event [3]: ...", "field": "[3].data.inputs"})

    async def go():
        sink, registry = sink_with(handler, retry_s=30, mode="batch")
        sink.submit(record("a"))
        sink.submit(record("b"))
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert posts == [4]
    assert value(registry, "flywheel_transformer_events_failed_total") == 4
    assert value(registry, "flywheel_transformer_events_sent_total") == 0
    assert value(registry, "flywheel_transformer_events_retried_total") == 0


def test_a_batch_too_large_for_the_sink_is_split_until_it_fits_and_a_lone_record_that_does_not_fails():
    posts = []

    def handler(request):
        ids = [e["id"] for e in batch_events(request)]
        posts.append(ids)
        too_large = len(ids) > 4 or "huge" in ids  # the sink's body limit: two records, and never "huge"
        return httpx.Response(413 if too_large else 202)

    async def go():
        sink, registry = sink_with(handler, mode="batch")
        for name in ("a", "b", "huge", "c", "d"):
            sink.submit(record(name))
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert [sorted(set(ids)) for ids in posts] == [
        ["a", "b", "c", "d", "huge"], ["a", "b"], ["c", "d", "huge"], ["huge"], ["c", "d"]]
    assert value(registry, "flywheel_transformer_events_sent_total") == 8
    assert value(registry, "flywheel_transformer_events_failed_total") == 2  # only the record that never fits


def test_a_batch_whose_retry_budget_runs_out_is_given_up_whole():
    posts = []

    def handler(request):
        posts.append([e["id"] for e in batch_events(request)])
        return httpx.Response(503) if len(posts) <= 2 else httpx.Response(202)

    async def go():
        sink, registry = sink_with(handler, retry_s=0.25, mode="batch")  # tries at 0 and 0.1 s; 0.3 s would pass
        sink.submit(record("lost-1"))
        sink.submit(record("lost-2"))
        await sink.drain()
        sink.submit(record("next"))
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert [sorted(set(ids)) for ids in posts] == [["lost-1", "lost-2"], ["lost-1", "lost-2"], ["next"]]
    assert value(registry, "flywheel_transformer_events_failed_total") == 4
    assert value(registry, "flywheel_transformer_events_sent_total") == 2
    assert value(registry, "flywheel_transformer_events_submitted_total") == 6


def test_a_batch_carries_the_drift_ingest_token_and_a_401_fails_all_its_events(tmp_path):
    path = tmp_path / "drift-ingest"
    path.write_text("ingest-token\n")
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(401)

    async def go():
        sink, registry = sink_with(handler, token=TokenFile(path), retry_s=30, mode="batch")
        sink.submit(record())
        await sink.drain()
        await sink.aclose()
        return registry

    registry = run(go())
    assert seen == ["Bearer ingest-token"]
    assert value(registry, "flywheel_transformer_events_failed_total") == 2


def test_close_in_batch_mode_counts_a_batch_in_flight_and_the_queue_unsent():
    async def go():
        registry = CollectorRegistry()
        sink = EventSink("http://sink/", ATTRIBUTES, Metrics(registry), "fraud", 10, 30.0, senders=1, transport=Hung(),
                         mode="batch", batch_max=2)
        for i in range(3):
            sink.submit(record(f"r{i}"))
        report = await sink.close(deadline_s=0.05)
        return report, registry

    report, registry = run(go())
    assert (report.sent, report.failed, report.unsent) == (0, 0, 6)  # a batch of 2 records in flight + 1 queued
    assert value(registry, "flywheel_transformer_events_unsent_total") == 6
