"""Admission control in the real router process: past MAX_IN_FLIGHT (+ MAX_WAITING) inference is answered
503 + Retry-After at once, while probes, /metrics and the admin port still answer.

A request is held in flight deterministically by sending its headers and only half its body: the router
has admitted it and waits for the rest, so the test decides when it finishes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from test_process import free_port, wait

BODY = b'{"instances": [[0.5, 0.5]]}'


@pytest.fixture
def one_slot(tmp_path: Path):
    ports = {"http": free_port(), "admin": free_port()}
    (tmp_path / "token").write_text("tok")
    env = {
        **os.environ,
        "FLYWHEEL_ROUTER_HTTP_HOST": "127.0.0.1",
        "FLYWHEEL_ROUTER_ADMIN_HOST": "127.0.0.1",
        "FLYWHEEL_ROUTER_HTTP_PORT": str(ports["http"]),
        "FLYWHEEL_ROUTER_ADMIN_PORT": str(ports["admin"]),
        "FLYWHEEL_ROUTER_TOKEN_FILE": str(tmp_path / "token"),
        "FLYWHEEL_ROUTER_ROUTES_FILE": str(tmp_path / "routes.json"),
        "FLYWHEEL_ROUTER_DEFAULT_UPSTREAM": "http://127.0.0.1:9",  # nothing listens: an answer is a quick 503
        "FLYWHEEL_ROUTER_MAX_IN_FLIGHT": "1",
        "FLYWHEEL_ROUTER_MAX_WAITING": "0",
        "FLYWHEEL_ROUTER_RETRY_AFTER_S": "5",
    }
    with open(tmp_path / "router.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "flywheel_router"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{ports['http']}"
        wait(f"{base}/v2/health/ready")
        yield base, f"http://127.0.0.1:{ports['admin']}"
    finally:
        process.kill()
        process.wait()


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_past_the_limit_inference_is_shed_with_503_and_retry_after_but_probes_metrics_and_admin_answer(one_slot) -> None:
    base, admin = one_slot
    port = int(base.rsplit(":", 1)[1])
    held = socket.create_connection(("127.0.0.1", port))
    head = f"POST /v1/models/fraud:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
    held.sendall(head + BODY[:5])
    try:
        deadline = time.monotonic() + 10  # until the router has read the headers: a bound, not an assertion
        while metric(base, "flywheel_router_admission_in_flight") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        shed = httpx.post(f"{base}/v2/models/fraud/infer", content=BODY)
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "5"
        assert shed.json()["code"] == "overloaded" and "FLYWHEEL_ROUTER_MAX_IN_FLIGHT" in shed.json()["error"]
        assert httpx.get(f"{base}/v2/health/live").status_code == 200
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200
        assert httpx.get(f"{admin}/v1/routes", headers={"authorization": "Bearer tok"}).status_code == 200
        assert metric(base, 'flywheel_router_admission_shed_total{reason="queue_full"}') == 1
    finally:
        held.sendall(BODY[5:])
        answer = b""
        while b"cannot answer" not in answer and (chunk := held.recv(65536)):
            answer += chunk
        held.close()
    assert answer.startswith(b"HTTP/1.1 503") and b"cannot answer" in answer  # served: its upstream is down
    assert metric(base, "flywheel_router_admission_in_flight") == 0
