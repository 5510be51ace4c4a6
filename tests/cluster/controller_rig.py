"""What tests/cluster/test_controller.py and bench/controller/control_plane.py both need around the
controller: the router's admin API, steady traffic through the router, and the API server credentials of a
ServiceAccount (so the controller runs with exactly the chart's RBAC)."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml


class RouterAdmin:
    """The router's admin API with its bearer token."""

    def __init__(self, admin: str, token_file: Path) -> None:
        self.admin, self.token_file = admin, token_file

    def call(self, method: str, path: str, body: dict | None = None) -> dict | None:
        headers = {"authorization": f"Bearer {self.token_file.read_text().strip()}", "content-type": "application/json"}
        request = urllib.request.Request(self.admin + path, method=method, headers=headers,
                                         data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def route(self, model: str) -> dict | None:
        return self.call("GET", f"/v1/routes/{model}")

    def put_route(self, model: str, body: dict) -> dict | None:
        for attempt in range(5):  # the admin GET answers from the loaded table: a fresh write may 409 once
            current = self.route(model)
            try:
                return self.call("PUT", f"/v1/routes/{model}",
                                 {**body, "generation": (current or {}).get("generation", 0)})
            except urllib.error.HTTPError as e:
                if e.code != 409 or attempt == 4:
                    raise
                time.sleep(0.3)
        return None


def stable_only(version: str) -> Callable[[dict | None], bool]:
    """A check that the route sends everything to `version` (no candidate, no weight)."""
    return lambda r: (
        bool(r) and r["stable"]["version"] == version and not r.get("candidate") and not r.get("candidateWeight")
    )


class Traffic:
    """Steady V2 requests through the router from a few threads (~60 req/s), counting answers and failures."""

    def __init__(self, url: str, threads: int = 3, pause_s: float = 0.04) -> None:
        self.url, self.threads, self.pause_s = url, threads, pause_s
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 19], "data": [0.1] * 19}]}
        self.body = json.dumps(body).encode()

    def start(self) -> None:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)

    def _run(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(self.url, data=self.body, headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    response.read()
                self.ok += 1
            except (urllib.error.URLError, OSError):
                self.failed += 1
            time.sleep(self.pause_s)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=10)


def service_account_env(kubeconfig: Path, kubectl: Callable, namespace: str, account: str,
                        directory: Path) -> dict[str, str]:
    """FLYWHEEL_CONTROLLER_KUBE_* settings that reach the API server of `kubeconfig` as `account`."""
    config = yaml.safe_load(kubeconfig.read_text())
    current = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
    server = next(c["cluster"] for c in config["clusters"] if c["name"] == current["cluster"])
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "ca.crt"
    if "certificate-authority-data" in server:
        ca_file.write_bytes(base64.b64decode(server["certificate-authority-data"]))
    else:
        ca_file.write_bytes((kubeconfig.parent / server["certificate-authority"]).read_bytes())
    token_file = directory / "token"
    token_file.write_text(kubectl("create", "token", account, "-n", namespace, "--duration", "2h").stdout.strip())
    return {
        "FLYWHEEL_CONTROLLER_NAMESPACE": namespace,
        "FLYWHEEL_CONTROLLER_KUBE_API_URL": server["server"],
        "FLYWHEEL_CONTROLLER_KUBE_TOKEN_FILE": str(token_file),
        "FLYWHEEL_CONTROLLER_KUBE_CA_FILE": str(ca_file),
    }
