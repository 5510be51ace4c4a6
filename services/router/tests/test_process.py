"""`python -m flywheel_router` as a real process: not ready before routes load, serves, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flywheel_contracts.ports import free_port


def wait(url: str, status: int = 200, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=1)
            if r.status_code == status:
                return r
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered {status}")


@pytest.fixture
def router(tmp_path: Path):
    ports = {"http": free_port(), "admin": free_port()}
    token = tmp_path / "token"
    token.write_text("tok")
    env = {
        **os.environ,
        "FLYWHEEL_ROUTER_HTTP_HOST": "127.0.0.1",
        "FLYWHEEL_ROUTER_ADMIN_HOST": "127.0.0.1",
        "FLYWHEEL_ROUTER_HTTP_PORT": str(ports["http"]),
        "FLYWHEEL_ROUTER_ADMIN_PORT": str(ports["admin"]),
        "FLYWHEEL_ROUTER_TOKEN_FILE": str(token),
        "FLYWHEEL_ROUTER_ROUTES_FILE": str(tmp_path / "routes.json"),
        "FLYWHEEL_ROUTER_DEFAULT_UPSTREAM": "http://127.0.0.1:9",  # nothing listens: the stable is down
    }
    log = open(tmp_path / "router.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "flywheel_router"], env=env, stdout=log, stderr=subprocess.STDOUT)
    yield process, ports, tmp_path
    if process.poll() is None:
        process.kill()
        process.wait()
    log.close()


def test_the_router_serves_and_stops_cleanly_on_sigterm(router) -> None:
    process, ports, tmp = router
    base, admin = f"http://127.0.0.1:{ports['http']}", f"http://127.0.0.1:{ports['admin']}"
    wait(f"{base}/v2/health/ready")
    auth = {"authorization": "Bearer tok"}
    assert httpx.put(f"{admin}/v1/routes/fraud", json={"stable": {"version": "v1"}}, headers=auth).status_code == 201
    assert httpx.get(f"{admin}/v1/routes", headers={}).status_code == 401
    down = httpx.post(f"{base}/v1/models/fraud:predict", json={"instances": []}, timeout=5)  # the timeout bounds it
    assert down.status_code == 503 and "cannot answer" in down.json()["error"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    log = (tmp / "router.log").read_text()
    assert "routes loaded from file" in log and "router stopped" in log
    assert "POST /v1/models" not in log  # no line per request


def test_a_restarted_router_routes_by_the_stored_routes_before_it_is_ready(router, tmp_path: Path) -> None:
    process, ports, tmp = router
    (tmp / "routes.json").write_text(
        json.dumps({"routes": {"fraud": {"model": "fraud", "generation": 4, "stable": {"version": "v3"}}}})
    )
    wait(f"http://127.0.0.1:{ports['http']}/v2/health/ready")
    got = httpx.get(f"http://127.0.0.1:{ports['admin']}/v1/routes/fraud", headers={"authorization": "Bearer tok"})
    assert got.json()["generation"] == 4 and got.json()["stable"]["version"] == "v3"


def test_a_bad_setting_exits_2_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "FLYWHEEL_ROUTER_ROUTE_SOURCE": "zookeeper"}
    result = subprocess.run(
        [sys.executable, "-m", "flywheel_router"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "FLYWHEEL_ROUTER_ROUTE_SOURCE" in result.stderr

