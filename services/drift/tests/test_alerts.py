"""Alerts: delivered as CloudEvents and webhooks, one per shift, retried on failure."""

import json

import httpx

from conftest import Harness, make_settings, synthetic_probabilities, synthetic_rows


class Sink:
    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[httpx.Request] = []
        self.fail_first = fail_first

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) <= self.fail_first:
            return httpx.Response(503)
        return httpx.Response(202)


def run(tmp_path, sink, **overrides):
    sinks = {"alert_cloudevent_sinks": "http://controller/events", "alert_webhook_sinks": "http://trainer/hook"}
    settings = make_settings(tmp_path, **{**sinks, **overrides})
    return Harness(settings, alert_transport=httpx.MockTransport(sink))


def test_one_shift_is_one_alert_sent_as_cloudevent_and_webhook(tmp_path, repo):
    sink = Sink()
    h = run(tmp_path, sink)
    try:
        for seed in range(6):  # six drifted windows in a row
            h.batch(synthetic_rows(500, seed, shift={"amount_log": 1.0}), synthetic_probabilities(500, seed))
        h.sync()
        h.service.alerts.drain()
        by_url = {str(r.url): r for r in sink.requests}
        assert set(by_url) == {"http://controller/events", "http://trainer/hook"}
        event = by_url["http://controller/events"]
        assert event.headers["ce-type"] == "io.flywheel.serving.inference.drift"
        assert event.headers["ce-subject"] == "fraud/v1" and event.headers["ce-specversion"] == "1.0"
        body = json.loads(event.content)
        assert body["model"] == "fraud" and body["category"] == "data" and "amount_log" in body["features"]
        assert json.loads(by_url["http://trainer/hook"].content)["id"] == body["id"]
        assert len(h.version()["alerts"]) == 1
    finally:
        h.close()


def test_after_the_shift_ends_and_the_cooldown_passes_a_new_shift_alerts_again(tmp_path, repo):
    sink = Sink()
    h = run(tmp_path, sink, alert_cooldown_s=0)
    try:
        for seed in range(3):
            h.batch(synthetic_rows(500, seed, shift={"amount_log": 1.0}), synthetic_probabilities(500, seed))
        for seed in range(3, 6):
            h.batch(synthetic_rows(500, seed), synthetic_probabilities(500, seed))
        for seed in range(6, 9):
            h.batch(synthetic_rows(500, seed, shift={"txn_count_24h": -1.0}), synthetic_probabilities(500, seed))
        alerts = h.version()["alerts"]
        assert len(alerts) == 2
        assert "amount_log" in alerts[0]["features"] and "txn_count_24h" in alerts[1]["features"]
    finally:
        h.close()


def test_a_failing_sink_is_retried(tmp_path, repo, monkeypatch):
    monkeypatch.setattr("flywheel_drift._alerts.time.sleep", lambda s: None)
    sink = Sink(fail_first=2)
    h = run(tmp_path, sink, alert_webhook_sinks="")
    try:
        for seed in range(2):
            h.batch(synthetic_rows(500, seed, shift={"amount_log": 1.0}), synthetic_probabilities(500, seed))
        h.sync()
        h.service.alerts.drain()
        assert len(sink.requests) == 3
        assert "flywheel_drift_alert_deliveries_total 1.0" in h.client.get("/metrics").text
    finally:
        h.close()
