"""Admission control in the real drift process: past MAX_IN_FLIGHT (+ MAX_WAITING) intake is answered 503 +
Retry-After at once, while probes, /metrics and the report still answer, and the slot comes back.

A request is held in flight deterministically by sending its headers and only half its body: the service has
admitted it and waits for the rest, so the test decides when it finishes."""

from __future__ import annotations

import signal
import socket
import time

import httpx

from flywheel_contracts.auth import TokenFile

from test_events import kserve, transformer_request
from test_process import free_port, start


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_past_the_limit_intake_is_shed_but_probes_metrics_and_the_report_answer(tmp_path, repo):
    process, url, _ = start(tmp_path, free_port(), FLYWHEEL_DRIFT_MAX_IN_FLIGHT="1", FLYWHEEL_DRIFT_MAX_WAITING="0",
                            FLYWHEEL_DRIFT_RETRY_AFTER_S="2")
    writer = TokenFile(tmp_path / "tokens" / "drift-ingest").header()
    body = transformer_request(2)
    headers = {**kserve("request"), **writer, "content-length": str(len(body))}
    try:
        host, port = url.removeprefix("http://").split(":")
        held = socket.create_connection((host, int(port)))
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        held.sendall(f"POST / HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body[:10])
        deadline = time.monotonic() + 10  # until the server has read the headers: a bound, not the assertion
        while metric(url, "flywheel_drift_admission_in_flight") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert metric(url, "flywheel_drift_admission_in_flight") == 1
        shed = httpx.post(url, headers={**kserve("request"), **writer}, content=body)
        assert shed.status_code == 503 and shed.headers["retry-after"] == "2"
        assert shed.json()["code"] == "overloaded" and "FLYWHEEL_DRIFT_MAX_IN_FLIGHT" in shed.json()["error"]
        for path in ("/health", "/ready", "/metrics", "/v1/report"):
            assert httpx.get(f"{url}{path}").status_code == 200, path
        assert metric(url, 'flywheel_drift_admission_shed_total{reason="queue_full"}') == 1
        held.sendall(body[10:])
        answer = held.recv(65536)
        held.close()
        assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
        assert metric(url, "flywheel_drift_admission_in_flight") == 0
        again = httpx.post(url, headers={**kserve("request"), **writer}, content=transformer_request(1))
        assert again.status_code == 202
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
