"""Admission control in the real predictor process: past MAX_IN_FLIGHT (+ MAX_WAITING) an inference request
is answered 503 + Retry-After at once, probes and /metrics still answer, and the slot comes back.

A request is held in flight deterministically by sending its headers and only half its body: the predictor
has admitted it and waits for the rest, so the test decides when it finishes.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Server, running_server
from tiny_model import DIM

V1 = "/v1/models/fraud:predict"
BODY = json.dumps({"instances": [[0.5] * DIM]}).encode()


@pytest.fixture(scope="module")
def one_slot(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    limits = {"FLYWHEEL_PREDICTOR_MAX_IN_FLIGHT": "1", "FLYWHEEL_PREDICTOR_MAX_WAITING": "0",
              "FLYWHEEL_PREDICTOR_RETRY_AFTER_S": "2"}
    with running_server(repo, tmp_path_factory.mktemp("logs"), limits) as server:
        yield server


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def held_request(url: str) -> socket.socket:
    """A V1 request whose body is half sent: in flight until the rest arrives."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)))
    head = f"POST {V1} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    conn.sendall(head.encode() + BODY[:10])
    return conn


def finish(conn: socket.socket) -> bytes:
    conn.sendall(BODY[10:])
    answer = b""
    while b'"predictions"' not in answer and b"error" not in answer:
        chunk = conn.recv(65536)
        if not chunk:
            break
        answer += chunk
    conn.close()
    return answer


def test_past_the_limit_inference_is_shed_with_503_and_retry_after_but_probes_and_metrics_answer(one_slot: Server) -> None:
    with httpx.Client(base_url=one_slot.url, timeout=10) as client:
        conn = held_request(one_slot.url)
        try:
            deadline = time.monotonic() + 10  # until the server has read the headers: a bound, not an assertion
            while metric(client, "flywheel_predictor_admission_in_flight") < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert metric(client, "flywheel_predictor_admission_in_flight") == 1
            for path in (V1, "/v2/models/fraud/infer"):
                shed = client.post(path, content=BODY, headers={"content-type": "application/json"})
                assert shed.status_code == 503, shed.text
                assert shed.headers["retry-after"] == "2"
                assert shed.json()["code"] == "overloaded"
                assert "FLYWHEEL_PREDICTOR_MAX_IN_FLIGHT" in shed.json()["error"]
            for probe in ("/v2/health/live", "/v2/health/ready", "/v2/models/fraud/ready", "/metrics"):
                assert client.get(probe).status_code == 200, probe
            shed_total = 'flywheel_predictor_admission_shed_total{reason="queue_full"}'
            assert metric(client, shed_total) == 2
        finally:
            answer = finish(conn)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert metric(client, "flywheel_predictor_admission_in_flight") == 0
        assert client.post(V1, content=BODY, headers={"content-type": "application/json"}).status_code == 200
