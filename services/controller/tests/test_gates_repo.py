"""The candidate's gates as the controller reads them from a model repository (metadata.json `gates`, written by the
trainer as flywheel_core.model_repo.VersionGates): accepted, rejected with the failed gates named, or unverified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flywheel_controller._gates_repo import NoGateCheck, RepositoryGates, make_gate_source, read_gates

from fake_apiserver import rollout_object

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def check(name: str, passed: bool, reason: str) -> dict:
    return {"name": name, "passed": passed, "value": 0.0, "threshold": 0.0, "values": {}, "reason": reason}


REJECTED = {"status": "rejected", "passed": False, "stable_version": "v1", "split": "test", "checks": [
    check("pr_auc_gain", False, "lower end -0.01 not above 0.0"),
    check("ece_increase", True, "increase +0.001 <= 0.02"),
    check("slice_pr_auc_drop", False, "country=US drops 0.2"),
]}
ACCEPTED = {**REJECTED, "status": "candidate", "passed": True,
            "checks": [check("variants", True, "published fp32 within their gates")]}


def publish(repo: Path, version: str, gates: dict | None) -> None:
    directory = repo / "fraud" / version
    directory.mkdir(parents=True)
    metadata = {"model": "fraud", "version": version, "input": {}, "output": {}}
    if gates is not None:
        metadata["gates"] = gates
    (directory / "metadata.json").write_text(json.dumps(metadata))


def test_a_rejected_version_names_every_failed_gate_and_the_stable(tmp_path):
    publish(tmp_path, "v2", REJECTED)
    verdict = read_gates(tmp_path, "fraud", "v2")
    assert verdict.verdict == "rejected"
    assert verdict.reason == ("failed against v1: pr_auc_gain: lower end -0.01 not above 0.0; "
                              "slice_pr_auc_drop: country=US drops 0.2")


def test_a_version_that_passed_or_predates_gates_is_accepted(tmp_path):
    publish(tmp_path, "v1", None)
    publish(tmp_path, "v2", ACCEPTED)
    assert read_gates(tmp_path, "fraud", "v1").verdict == "accepted"
    assert read_gates(tmp_path, "fraud", "v2").verdict == "accepted"


@pytest.mark.parametrize(("version", "content", "why"), [
    ("v3", None, "is not published"),
    ("v2", "{not json", "cannot be read"),
    ("v2", json.dumps({"gates": {"status": "approved"}}), "does not fit the contract"),
    ("../v2", None, "is not a model repository path"),
])
def test_a_candidate_the_repository_cannot_vouch_for_is_unverified(tmp_path, version, content, why):
    if content is not None:
        (tmp_path / "fraud" / "v2").mkdir(parents=True)
        (tmp_path / "fraud" / "v2" / "metadata.json").write_text(content)
    verdict = read_gates(tmp_path, "fraud", version)
    assert verdict.verdict == "unverified" and why in verdict.reason


async def test_without_a_repository_nothing_is_checked(tmp_path):
    assert isinstance(make_gate_source(None), NoGateCheck)
    assert await make_gate_source(None).candidate_gates("fraud", "v2") is None
    publish(tmp_path, "v2", REJECTED)
    source = make_gate_source(tmp_path)
    assert isinstance(source, RepositoryGates)
    assert (await source.candidate_gates("fraud", "v2")).verdict == "rejected"


def test_local_mode_refuses_a_rejected_candidate_as_a_real_process_without_touching_the_router(tmp_path):
    """`python -m flywheel_controller --local` with --model-repo: the refusal needs no router (none listens here)."""
    publish(tmp_path / "repo", "v2", REJECTED)
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(rollout_object("fraud-v2-canary")))
    env = {**os.environ, "FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL": "http://127.0.0.1:9"}
    env.pop("FLYWHEEL_CONTROLLER_MODEL_REPO", None)
    run = subprocess.run(
        [sys.executable, "-m", "flywheel_controller", "--local", str(path), "--model-repo", str(tmp_path / "repo"),
         "--state-dir", str(tmp_path / "state")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "fraud-v2-canary: Failed - candidate v2 was published as rejected by its gates" in run.stdout
    assert "pr_auc_gain: lower end -0.01 not above 0.0" in run.stdout
    state = yaml.safe_load(next((tmp_path / "state").iterdir()).read_text())
    assert state["status"]["phase"] == "Failed" and not state["status"].get("startedAt")
