"""Admission control in the real features server: past MAX_IN_FLIGHT (+ MAX_WAITING) a lookup is answered 503 +
Retry-After at once, while probes and /metrics answer, and the slot comes back.

A request is held in flight deterministically by sending its headers and only half its body: the server has
admitted it and waits for the rest, so the test decides when it finishes."""

import json
import signal
import socket
import subprocess
import sys
import time

import httpx

from conftest import free_port
from test_process import _env

LOOKUP = json.dumps({"features": ["card_activity:txn_count_24h"], "entities": {"card_id": ["c000001"]}}).encode()


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_past_the_limit_a_lookup_is_shed_but_probes_and_metrics_answer(store, settings, read_header, tmp_path):
    port = free_port()
    env = _env(settings, tmp_path, FLYWHEEL_FEATURES_HOST="127.0.0.1", FLYWHEEL_FEATURES_PORT=str(port),
               FLYWHEEL_FEATURES_LOG_LEVEL="warning", FLYWHEEL_FEATURES_READ_TOKEN_FILE=str(settings.read_token_file),
               FLYWHEEL_FEATURES_MAX_IN_FLIGHT="1", FLYWHEEL_FEATURES_MAX_WAITING="0",
               FLYWHEEL_FEATURES_RETRY_AFTER_S="2")
    server = subprocess.Popen([sys.executable, "-m", "flywheel_features", "serve"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.stdout else ""
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=30) as client:
            held = socket.create_connection(("127.0.0.1", port))
            head = "".join(f"{k}: {v}\r\n" for k, v in read_header.items())
            held.sendall(f"POST /get-online-features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(LOOKUP)}\r\n{head}\r\n".encode() + LOOKUP[:10])
            bound = time.monotonic() + 10  # until the server has read the headers: a bound, not the assertion
            while metric(client, "flywheel_features_admission_in_flight") < 1 and time.monotonic() < bound:
                time.sleep(0.01)
            json_headers = {**read_header, "content-type": "application/json"}
            shed = client.post("/get-online-features", headers=json_headers, content=LOOKUP)
            assert shed.status_code == 503 and shed.headers["retry-after"] == "2"
            assert shed.json()["code"] == "overloaded" and "FLYWHEEL_FEATURES_MAX_IN_FLIGHT" in shed.json()["error"]
            for path in ("/health", "/ready", "/metrics"):
                assert client.get(path).status_code == 200, path
            held.sendall(LOOKUP[10:])
            answer = held.recv(65536)
            held.close()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            assert metric(client, "flywheel_features_admission_in_flight") == 0
            assert client.post("/get-online-features", headers=json_headers, content=LOOKUP).status_code == 200
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    finally:
        server.kill()
