"""The service half of the drift benchmark: `python -m flywheel_drift` as a real process on loopback.

- time to ready: process start to /ready 200, with and without a shipped drift_state;
- ingest: 1000-row batches from 4 client threads for a fixed time, durable (fsync) spool; rows/s
  accepted, 429s, and the server's CPU seconds (from /proc), hence rows per CPU-second ("per core");
- analysis: how fast the processor drains what was accepted;
- CloudEvents: single-row request/response pairs, events/s and the sink's POST latency.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd

from flywheel_contracts.ports import free_port
from flywheel_core import model_repo, schema

ROOT = Path(__file__).resolve().parents[2]
NAMES = [c["name"] for c in schema.COLUMNS]


def rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, schema.INPUT_DIM)).astype(np.float32)
    hours = rng.integers(0, 24, n)
    x[:, NAMES.index("hour_sin")] = np.sin(2 * math.pi * hours / 24)
    x[:, NAMES.index("hour_cos")] = np.cos(2 * math.pi * hours / 24)
    for name, k in (("card_id", 4000), ("merchant_id", 1000), ("country", 10), ("merchant_category", 8),
                    ("channel", 3), ("currency", 6)):
        x[:, NAMES.index(name)] = rng.integers(1, k + 1, n)
    return x


def publish(repo: Path, with_state: bool) -> Path:
    staging = model_repo.staging_path(repo, "fraud")
    frame = pd.DataFrame(rows(5000, 0), columns=NAMES)
    frame["probability"] = np.random.default_rng(1).beta(1, 30, 5000).astype(np.float32)
    frame.to_parquet(staging / "drift_reference.parquet", index=False)
    if with_state:
        subprocess.run([sys.executable, "-m", "flywheel_drift", "precompute", "--version-dir", str(staging)],
                       check=True, capture_output=True)
    meta = {"input": {"name": "input", "datatype": "FP32", "shape": [-1, 19], "columns": schema.COLUMNS},
            "output": {"name": "probability", "datatype": "FP32", "shape": [-1, 1]}}
    return model_repo.publish(staging, repo, "fraud", meta)



class Server:
    def __init__(self, scratch: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Batches need the drift ingest token (docs/security.md); this bench's own, in its scratch dir.
        token = scratch / "ingest-token"
        token.write_text(secrets.token_urlsafe(32) + "\n")
        self.auth = {"authorization": f"Bearer {token.read_text().strip()}"}
        full = {**os.environ, "FLYWHEEL_DRIFT_HTTP_HOST": "127.0.0.1", "FLYWHEEL_DRIFT_HTTP_PORT": str(self.port),
                "FLYWHEEL_DRIFT_INGEST_TOKEN_FILE": str(token),
                "FLYWHEEL_DRIFT_MODEL_REPO": str(scratch / "repo"), "FLYWHEEL_DRIFT_SPOOL_DIR": str(scratch / "spool"),
                "FLYWHEEL_DRIFT_MMD_ENABLED": "false", **env}
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "flywheel_drift"], env=full,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ready_s = self._wait_ready()

    def _wait_ready(self) -> float:
        while time.monotonic() - self.started < 120:
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("drift service not ready in 120 s")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metric(self, name: str) -> float:
        total = 0.0
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.split()[-1])
        return total

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def time_to_ready(scratch: Path, repeats: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for with_state in (True, False):
        shutil.rmtree(scratch, ignore_errors=True)
        publish(scratch / "repo", with_state)
        times = []
        for _ in range(repeats):
            server = Server(scratch)
            times.append(server.ready_s)
            server.stop()
        out["with_drift_state" if with_state else "without_drift_state"] = {
            "seconds": [round(t, 2) for t in times], "median": round(statistics.median(times), 2)}
    return out


def ingest(scratch: Path, seconds: float = 10.0, clients: int = 4, batch_rows: int = 1000) -> dict[str, Any]:
    shutil.rmtree(scratch, ignore_errors=True)
    publish(scratch / "repo", with_state=False)
    server = Server(scratch, FLYWHEEL_DRIFT_MAX_BACKLOG_ROWS="400000")
    bodies = [orjson.dumps({"model": "fraud", "rows": rows(batch_rows, 10 + i).tolist(),
                            "probabilities": np.full(batch_rows, 0.02).tolist(),
                            "ids": [f"b{i}-{j}" for j in range(batch_rows)]}) for i in range(8)]
    accepted, throttled = [0], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def post(k: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = k
            while time.monotonic() < deadline:
                r = client.post(f"{server.url}/v1/batch", content=bodies[i % len(bodies)],
                                headers={"content-type": "application/json", **server.auth})
                with lock:
                    if r.status_code == 202:
                        accepted[0] += batch_rows
                    elif r.status_code == 429:
                        throttled[0] += 1
                        time.sleep(0.05)
                i += clients

    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    threads = [threading.Thread(target=post, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    cpu_ingest = server.cpu_seconds() - cpu0
    analysed_at_end = server.metric("flywheel_drift_rows_total")
    while server.metric("flywheel_drift_backlog_rows") > 0 and time.monotonic() - t0 < seconds + 600:
        time.sleep(0.5)
    drain = time.monotonic() - t0
    analysed = server.metric("flywheel_drift_rows_total")
    cpu_total = server.cpu_seconds() - cpu0
    server.stop()
    return {"batch_rows": batch_rows, "clients": clients, "seconds": round(wall, 1), "accepted_rows": accepted[0],
            "accepted_rows_per_s": round(accepted[0] / wall), "throttled_429": throttled[0],
            "server_cpu_seconds_while_ingesting": round(cpu_ingest, 1),
            "accepted_rows_per_cpu_second": round(accepted[0] / max(cpu_ingest, 1e-9)),
            "analysed_rows_during_ingest": int(analysed_at_end), "analysed_rows": int(analysed),
            "analysis_finished_after_s": round(drain, 1),
            "rows_per_cpu_second_end_to_end": round(analysed / max(cpu_total, 1e-9)),
            "durable_fsync": True}


def cloudevents(scratch: Path, seconds: float = 5.0, clients: int = 4, durable: bool = True) -> dict[str, Any]:
    shutil.rmtree(scratch, ignore_errors=True)
    publish(scratch / "repo", with_state=False)
    server = Server(scratch, FLYWHEEL_DRIFT_DURABLE=str(durable).lower())
    x = rows(1, 3)[0].tolist()
    request = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 19], "data": x}]})
    response = orjson.dumps({"model_name": "fraud", "model_version": "v1",
                             "outputs": [{"name": "probability", "datatype": "FP32", "shape": [1, 1], "data": [0.1]}]})
    latencies: list[float] = []
    counts = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def post(k: int) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while time.monotonic() < deadline:
                for kind, body in (("request", request), ("response", response)):
                    headers = {"ce-specversion": "1.0", "ce-id": f"{k}-{i}", "ce-source": "bench",
                               "ce-type": f"org.kubeflow.serving.inference.{kind}", "content-type": "application/json"}
                    started = time.perf_counter()
                    r = client.post(server.url, content=body, headers=headers)
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies.append(elapsed)
                        counts[0] += r.status_code == 202
                i += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=post, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    server.stop()
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "durable_fsync": durable, "events_per_s": round(counts[0] / wall), "post_latency_ms": {
        "p50": round(float(np.percentile(ms, 50)), 2), "p99": round(float(np.percentile(ms, 99)), 2)},
        "note": "client and server share the same 2 cores" + ("; each POST waits for the group-committed fsync"
                                                              if durable else "; commits without fsync (WAL)")}
