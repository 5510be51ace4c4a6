"""The RetrainPolicy loop in the controller's local mode against the real stack: a person's request -> the trainer
as a subprocess (the real trainer on the stack's Feast data, told the run, the stable and the gates) -> the version
it published, found by its run -> gates -> a ModelRollout from the policy's template, judged on live traffic through
the router -> the new version is the route's stable. A candidate its gates reject never gets a ModelRollout or any
weight. The same loop on the API server (Jobs, RBAC, Events) is tests/cluster/test_retrain_loop.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import serve_only

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from rollout import PRE_PUBLISH, Traffic, live_transactions, versions  # noqa: E402

from localstack import venv_python  # noqa: E402

RPS = 60.0
TIMEOUT_S = 420.0  # a training run on the small history (~1 min on 2 busy cores) and a 2-step canary


def _policy(name: str, gates: dict) -> dict:
    return {"apiVersion": "flywheel.dev/v1alpha1", "kind": "RetrainPolicy", "metadata": {"name": name},
            "spec": {"model": "fraud", "cooldown": "1h", "triggers": {"manual": True},
                     "training": {"window": "8760h", "minNewLabels": 0, "epochs": 2}, "gates": gates,
                     "rolloutTemplate": {"spec": {
                         "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 50}]}},
                         "analysis": {"interval": "2s", "minSamples": 20, "metrics": [
                             {"name": "errors", "provider": "router", "metric": "error_rate", "max": 0.05}]}}}}}


class LocalLoop:
    """The local controller with one RetrainPolicy file, run until the policy's run ends."""

    def __init__(self, ports, data_dir: Path, workdir: Path, model_repo: Path, name: str) -> None:
        self.state = workdir / f"retrain-{name}"
        self.state.mkdir()
        self.name, self.model_repo, self.data_dir = name, model_repo, data_dir
        self.token = data_dir / "router" / "token"
        self.admin = f"http://127.0.0.1:{ports.router_admin}"
        self.env = {**os.environ, "FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL": self.admin,
                    "FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE": str(self.token),
                    "FLYWHEEL_CONTROLLER_DRIFT_URL": f"http://127.0.0.1:{ports.drift}",
                    "FLYWHEEL_CONTROLLER_HTTP_PORT": "0", "FLYWHEEL_DATA_DIR": str(data_dir),
                    "FLYWHEEL_TRAINER_PRE_PUBLISH_COMMAND": PRE_PUBLISH, "FLYWHEEL_TRAINER_SERVE": "torch"}
        self.trainer = (f"{venv_python('services/trainer')} -m flywheel_trainer train --feature-repo "
                        f"{ROOT / 'feature_repo'} --data {data_dir} --model-repo {model_repo}")

    def run(self, gates: dict) -> dict:
        policy = self.state / "policy.yaml"
        policy.write_text(yaml.safe_dump(_policy(self.name, gates)))
        controller = venv_python("services/controller")
        subprocess.run([controller, "-m", "flywheel_controller", "retrain", self.name, "--state-dir", str(self.state)],
                       check=True, capture_output=True)
        log = self.state / "controller.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [controller, "-m", "flywheel_controller", "--local", str(policy), "--state-dir", str(self.state),
                 "--model-repo", str(self.model_repo), "--trainer-command", self.trainer],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                status = self.status()
                if (status.get("lastRun") or {}).get("finishedAt"):
                    return status
                assert process.poll() is None, log.read_text()[-3000:]
                time.sleep(0.5)
            raise AssertionError(f"the run did not end in {TIMEOUT_S:g}s: {self.status()}\n{log.read_text()[-3000:]}")
        finally:
            process.terminate()
            process.wait(timeout=30)

    def status(self) -> dict:
        path = self.state / f"{self.name}.retrainpolicy.json"
        return json.loads(path.read_text()).get("status") or {} if path.exists() else {}

    def events(self) -> list[str]:
        path = self.state / f"{self.name}.events.jsonl"
        return [json.loads(line)["reason"] for line in path.read_text().splitlines()] if path.exists() else []

    def route(self) -> dict:
        return httpx.get(f"{self.admin}/v1/routes/fraud", headers=self._auth(), timeout=10).json()

    def serve_only(self, version: str) -> None:
        """Everything to `version`, no candidate: where a run starts."""
        with httpx.Client(timeout=10) as client:
            serve_only(client, self.admin, self._auth(), version)

    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token.read_text().strip()}"}


@pytest.fixture(scope="module")
def traffic(stack, ports, workdir: Path, data_env: dict[str, str]) -> Iterator[Traffic]:
    transactions = live_transactions(2000, Path(data_env["FLYWHEEL_DATA_DIR"]), workdir / "retrain-live.jsonl")
    running = Traffic(f"http://127.0.0.1:{ports.router}/v1/models/fraud:predict", transactions, RPS, concurrency=8)
    running.start()
    yield running
    running.stop()


def _loop(ports, data_env, workdir, model_repo, name) -> LocalLoop:
    return LocalLoop(ports, Path(data_env["FLYWHEEL_DATA_DIR"]), workdir, model_repo, name)


def test_a_request_trains_gates_and_rolls_the_new_version_out(stack, ports, data_env, workdir, model_repo, traffic):
    loop = _loop(ports, data_env, workdir, model_repo, "fraud-loop")
    stable = versions(model_repo)[0]
    loop.serve_only(stable)
    before = versions(model_repo)
    errors_before, sent_before = traffic.errors, traffic.sent

    status = loop.run({"minPRAUCGain": -1, "maxECEIncrease": 1, "maxSlicePRAUCDrop": 1})

    run = status["lastRun"]
    (new,) = [v for v in versions(model_repo) if v not in before]
    assert (run["trigger"], run["version"], run["gatesPassed"], run["verdict"]) == ("Manual", new, True, "Succeeded"), \
        status
    lineage = json.loads((model_repo / "fraud" / new / "metadata.json").read_text())["lineage"]
    assert lineage["run"]["id"] == run["job"] and lineage["run"]["parent"] == stable
    assert lineage["run"]["trigger"] == "Manual" and lineage["run"]["policy"] == "fraud-loop"
    assert loop.route()["stable"]["version"] == new and not loop.route().get("candidate")
    assert loop.events() == ["TrainingStarted", "RolloutCreated", "RolloutSucceeded"]
    errors, sent = traffic.errors - errors_before, traffic.sent - sent_before
    assert errors <= 0.01 * sent, (errors, sent, traffic.error_statuses)


def test_a_candidate_its_gates_reject_gets_no_rollout_and_no_traffic(stack, ports, data_env, workdir, model_repo,
                                                                   traffic):
    loop = _loop(ports, data_env, workdir, model_repo, "fraud-strict")
    route = loop.route()

    status = loop.run({"minPRAUCGain": 0.99})  # an impossible bar

    run = status["lastRun"]
    assert run["gatesPassed"] is False and run["verdict"] == "CandidateRejected" and "rollout" not in run, status
    meta = json.loads((model_repo / "fraud" / run["version"] / "metadata.json").read_text())
    assert meta["gates"]["status"] == "rejected"
    assert not (loop.state / "rollouts").exists()
    after = loop.route()
    assert after["stable"] == route["stable"] and not after.get("candidate") and not after.get("candidateWeight")
    assert loop.events() == ["TrainingStarted", "CandidateRejected"]
