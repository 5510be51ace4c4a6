"""The rollout controller's local mode (`python -m flywheel_controller --local`) against the real stack.

What `make rollout` (scripts/rollout.py) does, shortened: a ModelRollout YAML from the script's own template
(a 20% -> 50% canary judged every 2 s), simulated live traffic through the router the whole time (the script's
own Traffic thread), the controller as a subprocess. A candidate trained normally is promoted; one trained the
script's harmful way (a validation split too small to calibrate on: it declines a quarter of the traffic where
v1 declines none) is rolled back, and the router sends everything to the stable again within seconds. One its
gates rejected (the trainer publishes it marked so, exit 6) is refused before the route gives it any weight: the
controller reads the model repository (`--model-repo`), as the script has it do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from conftest import serve_only

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from rollout import (  # noqa: E402
    HARMFUL_ENV,
    PRE_PUBLISH,
    REJECTED_EXIT,
    ROLLOUT_TEMPLATE,
    Traffic,
    live_transactions,
    versions,
    warm,
)

from localstack import venv_python  # noqa: E402

RPS = 60.0  # 12 req/s to the candidate at 20%: 24 per 2 s interval, above minSamples
ROLLBACK_WITHIN_S = 5.0


class Controller:
    """Writes rollouts and runs the controller's local mode on them, against the stack's router."""

    def __init__(self, ports, data_dir: Path, workdir: Path, model_repo: Path) -> None:
        self.admin = f"http://127.0.0.1:{ports.router_admin}"
        self.token = data_dir / "router" / "token"
        self.auth = {"authorization": f"Bearer {self.token.read_text().strip()}"}
        self.env = {
            **os.environ,
            "FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL": self.admin,
            "FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE": str(self.token),
            "FLYWHEEL_CONTROLLER_DRIFT_URL": f"http://127.0.0.1:{ports.drift}",
            "FLYWHEEL_CONTROLLER_HTTP_PORT": "0",
        }
        self.model_repo = model_repo
        self.dir = workdir / "rollouts"
        self.dir.mkdir(exist_ok=True)
        self.predict_url = f"http://127.0.0.1:{ports.router}/v1/models/fraud:predict"
        self.client = httpx.Client(timeout=10)

    def route(self) -> dict:
        answer = self.client.get(f"{self.admin}/v1/routes/fraud", headers=self.auth)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def reset_route(self, stable: str) -> None:
        """Everything to `stable`, no candidate: where a rollout starts."""
        serve_only(self.client, self.admin, self.auth, stable)

    def roll_out(self, stable: str, candidate: str,
                 traffic: Traffic | None) -> tuple[subprocess.CompletedProcess, dict]:
        """Run a canary of `candidate` to its end; `traffic`'s transactions warm the candidate up first (None:
        no request to it at all)."""
        if traffic is not None:
            warm(self.predict_url, candidate, traffic.transactions)
        name = f"fraud-{candidate}-canary"
        path = self.dir / f"{name}.yaml"
        path.write_text(ROLLOUT_TEMPLATE.format(model="fraud", name=name, stable=stable, candidate=candidate,
                                                pause="5s", interval="2s", min_samples=20, path=path,
                                                state_dir=self.dir, model_repo=self.model_repo))
        done = subprocess.run(
            [venv_python("services/controller"), "-m", "flywheel_controller", "--local", str(path),
             "--state-dir", str(self.dir), "--model-repo", str(self.model_repo)],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120,
        )
        state = self.dir / f"default_{name}.status.json"
        assert state.is_file(), f"no status written:\n{done.stdout}\n{done.stderr[-3000:]}"
        return done, json.loads(state.read_text())["status"]


@pytest.fixture(scope="module")
def traffic(stack, ports, workdir: Path, data_env: dict[str, str]) -> Iterator[Traffic]:
    transactions = live_transactions(2000, Path(data_env["FLYWHEEL_DATA_DIR"]), workdir / "rollout-live.jsonl")
    running = Traffic(f"http://127.0.0.1:{ports.router}/v1/models/fraud:predict", transactions, RPS, concurrency=8)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def controller(stack, ports, data_env: dict[str, str], workdir: Path, model_repo: Path) -> Iterator[Controller]:
    controller = Controller(ports, Path(data_env["FLYWHEEL_DATA_DIR"]), workdir, model_repo)
    yield controller
    controller.client.close()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_good_candidate_is_promoted_and_becomes_the_routes_stable(controller, traffic, second_version):
    controller.reset_route("v1")

    done, status = controller.roll_out("v1", second_version, traffic)

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    assert status["phase"] == "Succeeded", done.stdout
    route = controller.route()
    assert route["stable"]["version"] == second_version
    assert not route.get("candidate") and not route.get("candidateWeight"), route
    assert traffic.sent > 0 and traffic.errors == 0, f"{traffic.errors} of {traffic.sent} failed: {traffic.error_statuses}"


def test_a_harmful_candidate_is_rolled_back_to_the_stable_within_seconds(controller, traffic, model_repo, data_env,
                                                                         second_version):
    before = versions(model_repo)
    subprocess.run(
        [venv_python("services/trainer"), "-m", "flywheel_trainer", "train", "--feature-repo", "feature_repo",
         "--data", data_env["FLYWHEEL_DATA_DIR"], "--model-repo", str(model_repo), "--model", "fraud",
         "--epochs", "3"],
        cwd=ROOT, check=True, capture_output=True,
        env={**os.environ, **data_env, **HARMFUL_ENV,
             "FLYWHEEL_TRAINER_PRE_PUBLISH_COMMAND": PRE_PUBLISH},
    )
    (harmful,) = [v for v in versions(model_repo) if v not in before]
    controller.reset_route("v1")  # returns once the router serves it

    done, status = controller.roll_out("v1", harmful, traffic)

    assert done.returncode == 1, f"{done.stdout}\n{done.stderr[-3000:]}"
    assert status["phase"] == "RolledBack", done.stdout
    failing = status["lastAnalysis"]
    assert failing["verdict"] == "Failed", failing
    rollback = next(d for d in reversed(status["decisions"]) if d["action"] == "Rollback")
    assert (_at(rollback["time"]) - _at(failing["time"])).total_seconds() <= ROLLBACK_WITHIN_S, done.stdout
    route = controller.route()
    assert route["stable"]["version"] == "v1"
    assert not route.get("candidateWeight"), route


def test_a_candidate_its_gates_rejected_is_refused_and_never_gets_weight(controller, model_repo, data_env):
    before = versions(model_repo)
    trained = subprocess.run(  # an impossible bar: PR-AUC 0.99 above v1's
        [venv_python("services/trainer"), "-m", "flywheel_trainer", "train", "--feature-repo", "feature_repo",
         "--data", data_env["FLYWHEEL_DATA_DIR"], "--model-repo", str(model_repo), "--model", "fraud",
         "--epochs", "1"],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, **data_env, "FLYWHEEL_TRAINER_PRE_PUBLISH_COMMAND": PRE_PUBLISH,
             "FLYWHEEL_TRAINER_STABLE_VERSION": "v1", "FLYWHEEL_TRAINER_GATE_MIN_PR_AUC_GAIN": "0.99"},
    )
    assert trained.returncode == REJECTED_EXIT, trained.stderr[-3000:]
    (rejected,) = [v for v in versions(model_repo) if v not in before]
    controller.reset_route("v1")

    done, status = controller.roll_out("v1", rejected, traffic=None)

    assert done.returncode == 1, f"{done.stdout}\n{done.stderr[-3000:]}"
    assert status["phase"] == "Failed" and "rejected by its gates" in status["message"], status
    assert f"fraud-{rejected}-canary CandidateRejected" in done.stderr, done.stderr[-3000:]
    assert not status.get("startedAt") and not status.get("candidateWeight"), status
    assert [d["action"] for d in status["decisions"]] == ["Fail"], status["decisions"]
    route = controller.route()
    assert route["stable"]["version"] == "v1"
    assert not route.get("candidate") and not route.get("candidateWeight"), route
