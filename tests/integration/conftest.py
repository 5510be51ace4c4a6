"""The local stack for integration tests: data, features, a trained model and the services, once per session.

Everything lives in a temporary directory (data, Feast registry and online store, model repo), on free
loopback ports, so the tests never touch the user's `make up` state.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest

from flywheel_core import feature_pipeline, label_feed

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from localstack import Ports, Stack, default_services, free_port, venv_python  # noqa: E402


def run(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def binary_shaped(headers: dict[str, str], body: bytes) -> list[dict]:
    """The events of one post as binary mode carries them ({"headers": ce-* and content-type, "body"}): a
    CloudEvents batch (the transformer's default EVENT_MODE) unpacked in order, anything else as it came."""
    if not headers.get("content-type", "").startswith("application/cloudevents-batch+json"):
        return [{"headers": headers, "body": body}]
    shared = {k: v for k, v in headers.items() if k != "content-type"}
    return [{"headers": {**shared, **{f"ce-{k}": v for k, v in event.items() if k not in ("data", "datacontenttype")},
                         "content-type": event["datacontenttype"]},
             "body": json.dumps(event["data"]).encode()} for event in json.loads(body)]


class EventSink:
    """A real HTTP server that records the CloudEvents the transformer posts to it, each as binary mode has it."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with sink.lock:
                    sink.events.extend(binary_shaped(headers, body))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def data_env(workdir: Path) -> dict[str, str]:
    """Small simulated history, applied and materialised into a temporary Feast store."""
    data = workdir / "data"
    env = {"FLYWHEEL_DATA_DIR": str(data)}
    features = venv_python("services/features")
    run([features, "-m", "flywheel_core.sim", "history", "--out", str(data), "--size", "small"], env)
    run([features, "-m", "flywheel_features", "apply"], env)
    run([features, "-m", "flywheel_features", "materialize"], env)
    return env


@pytest.fixture(scope="session")
def model_repo(workdir: Path, data_env: dict[str, str]) -> Path:
    repo = workdir / "model_repo"
    train(repo, data_env, epochs=3)
    return repo


def train(model_repo: Path, data_env: dict[str, str], epochs: int) -> None:
    """Publish a version of the torch model (FLYWHEEL_TRAINER_SERVE=torch): a few epochs on the small history lose
    to the logistic-regression baseline, which the trainer would serve instead, and these tests need versions
    whose scores differ with the epochs and which carry fp16 and int8 variants."""
    run(
        [venv_python("services/trainer"), "-m", "flywheel_trainer", "train", "--feature-repo", "feature_repo",
         "--data", data_env["FLYWHEEL_DATA_DIR"], "--model-repo", str(model_repo), "--model", "fraud",
         "--epochs", str(epochs)],
        {**data_env, "FLYWHEEL_TRAINER_SERVE": "torch",
         "FLYWHEEL_TRAINER_PRE_PUBLISH_COMMAND": f"{venv_python('services/drift')} -m flywheel_drift precompute --version-dir"},
    )


@pytest.fixture(scope="session")
def second_version(stack: Stack, model_repo: Path, data_env: dict[str, str]) -> str:
    """v2, trained (fewer epochs, so its scores differ) and published while the stack is already serving v1."""
    train(model_repo, data_env, epochs=1)
    assert (model_repo / "fraud" / "v2" / "metadata.json").is_file()
    return "v2"


@pytest.fixture(scope="session")
def event_sink() -> EventSink:
    sink = EventSink()
    yield sink
    sink.close()


@pytest.fixture(scope="session")
def ports() -> Ports:
    return Ports(
        features=free_port(), predictor=free_port(), transformer=free_port(), drift=free_port(), router=free_port(),
        router_admin=free_port(),
    )


@pytest.fixture(scope="session")
def stack(workdir: Path, data_env: dict[str, str], model_repo: Path, ports: Ports, event_sink: EventSink) -> Stack:
    # Stream rows reach the offline store a second after they arrive, so tests comparing with training's join
    # (test_training_serving_parity) need not wait the default minute.
    extra = {"FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": event_sink.url, "FLYWHEEL_FEATURES_STREAM_FLUSH_S": "1"}
    services = default_services(model_repo, Path(data_env["FLYWHEEL_DATA_DIR"]), ports, extra_env=extra)
    with Stack(services, log_dir=workdir / "logs") as running:
        yield running


@pytest.fixture(scope="session")
def live_transactions(workdir: Path, data_env: dict[str, str]) -> list[dict]:
    """Live traffic that continues the small history (same cards and merchants)."""
    out = workdir / "live.jsonl"
    run([venv_python("services/features"), "-m", "flywheel_core.sim", "live", "--scenario", "none", "--n", "50",
         "--out", str(out)], data_env)
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def streamed(ports: Ports) -> float:
    """Transactions the features service's stream step has taken (logged, their card rows pushed online)."""
    text = httpx.get(f"http://127.0.0.1:{ports.features}/metrics", timeout=5).text
    match = re.search(r"^flywheel_features_stream_transactions_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def newest_known(data_dir: Path) -> pd.Timestamp:
    """The newest event the history or the stream step holds: a transaction after it is new to every card."""
    history = feature_pipeline.read_parquet(data_dir / feature_pipeline.TRANSACTIONS_FILE, columns=["event_timestamp"])
    newest = pd.Timestamp(history["event_timestamp"].max())
    newest = newest.tz_localize("UTC") if newest.tzinfo is None else newest
    scored = label_feed.scored(data_dir)
    return max(newest, pd.Timestamp(max(scored.values()), unit="us", tz="UTC")) if scored else newest


def serve_only(client: httpx.Client, admin: str, auth: dict, version: str) -> None:
    """The route sends everything to `version`, no candidate (where a rollout starts), and the router serves it."""
    current = client.get(f"{admin}/v1/routes/fraud", headers=auth)
    generation = current.json()["generation"] if current.status_code == 200 else 0
    answer = client.put(f"{admin}/v1/routes/fraud", headers=auth,
                        json={"stable": {"version": version}, "generation": generation})
    assert answer.status_code in (200, 201), answer.text
    applied(client, admin, auth, answer.json()["generation"])


def applied(client: httpx.Client, admin: str, auth: dict, generation: int) -> None:
    """Wait until the router serves the route it stored: its admin GET answers from the routes it has loaded
    (it reads the routes file every 0.25 s), so this ends when predictions follow the new route."""
    deadline = time.monotonic() + 10  # a bound for a stuck router, not the assertion
    while client.get(f"{admin}/v1/routes/fraud", headers=auth).json().get("generation") != generation:
        assert time.monotonic() < deadline, f"the router never applied route generation {generation}"
        time.sleep(0.02)
