"""Builder fixtures: a temp model repo holding the tiny real ONNX model, and real predictor processes on
loopback ports (`python -m flywheel_predictor`, exactly what `make up` runs)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from flywheel_contracts.ports import free_port

import tiny_model  # noqa: E402

START_TIMEOUT_S = 60


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")



def server_env(repo: Path, port: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_PREDICTOR_")}
    env.update(
        FLYWHEEL_PREDICTOR_MODEL_REPO=str(repo),
        FLYWHEEL_PREDICTOR_HTTP_HOST="127.0.0.1",
        FLYWHEEL_PREDICTOR_HTTP_PORT=str(port),
        **(extra or {}),
    )
    return env


def run_to_exit(repo: Path, extra: Mapping[str, str] | None = None, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the predictor expecting it to refuse to start; returns its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "flywheel_predictor"],
        env=server_env(repo, free_port(), extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def running_server(repo: Path, log_dir: Path, extra: Mapping[str, str] | None = None) -> Iterator[Server]:
    port = free_port()
    log = log_dir / f"predictor-{port}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "flywheel_predictor"],
            env=server_env(repo, port, extra),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"predictor exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"predictor not ready after {START_TIMEOUT_S}s:\n{server.output()}")


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repo with fraud/v1: the tiny model, fp32 only."""
    root = tmp_path_factory.mktemp("model_repo")
    tiny_model.publish(root)
    return root


@pytest.fixture(scope="session")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One predictor with default settings, shared by the read-only tests."""
    with running_server(repo, tmp_path_factory.mktemp("logs")) as running:
        yield running


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http
