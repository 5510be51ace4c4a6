"""The RetrainPolicy loop, step by step: trigger -> run -> version found by its run -> gates -> ModelRollout ->
verdict, with the runs, rollouts and policy status held in memory and a real model repository directory.

The same loop against a real API server (Jobs, ModelRollouts, Events, RBAC) is tests/cluster/test_retrain_loop.py.
"""

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flywheel_contracts.retrain import MANUAL_REQUEST_ANNOTATION, RetrainPhase, RetrainPolicy, RetrainRun
from flywheel_controller._retrain import Serving
from flywheel_controller._retrain_kube import job_from_cronjob
from flywheel_controller._retrainer import POLICY_LABEL, Retrainer, RunState, rollout_object, run_name, trainer_env

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def policy(**spec_edits) -> RetrainPolicy:
    spec = {"model": "fraud", "cooldown": "1h", "training": {"minNewLabels": 0},
            "rolloutTemplate": {"metadata": {"labels": {"team": "risk"}},
                                "spec": {"strategy": {"type": "Canary", "steps": [{"setWeight": 20}]}}}}
    spec.update(spec_edits)
    return RetrainPolicy.model_validate({"metadata": {"name": "fraud", "uid": "u-1", "generation": 1,
                                                      "annotations": {MANUAL_REQUEST_ANNOTATION: T0.isoformat()}},
                                         "spec": spec})


def publish(repo: Path, version: str, run: str | None, rejected: bool = False) -> None:
    directory = repo / "fraud" / version
    directory.mkdir(parents=True)
    meta: dict = {"model": "fraud", "version": version,
                  "lineage": {"cutoff": "2026-11-29T00:00:00Z", "run": {"id": run}}}
    if rejected:
        meta["gates"] = {"status": "rejected", "stable_version": "v1",
                         "checks": [{"name": "pr_auc_gain", "passed": False, "reason": "CI lower end -0.01 <= 0"}]}
    (directory / "metadata.json").write_text(json.dumps(meta))


class Memory:
    """PolicyStore, Runs and Rollouts in memory; `publish` says what a finished run leaves in the repository."""

    def __init__(self, p: RetrainPolicy, repo: Path) -> None:
        self.policy, self.repo = p, repo
        self.events: list[tuple[str, str]] = []
        self.started: dict[str, dict[str, str]] = {}
        self.run_states: dict[str, RunState] = {}
        self.rollouts: dict[str, dict] = {}
        self.rollout_phase: dict[str, str] = {}

    async def list(self):
        return [self.policy]

    async def write_status(self, p, status):
        self.policy = p.model_copy(update={"status": status})
        return self.policy

    async def post_event(self, p, event):
        self.events.append((event.reason, event.message))

    async def start(self, p, name, env):
        self.started[name] = env
        self.run_states[name] = RunState("running")

    async def state(self, p, name):
        return self.run_states.get(name, RunState("missing"))

    async def create(self, p, rollout):
        self.rollouts.setdefault(rollout["metadata"]["name"], rollout)

    async def phase(self, p, name):
        return (self.rollout_phase.get(name, "Progressing"), "") if name in self.rollouts else None


def loop(mem: Memory, repo: Path | None, clock) -> Retrainer:
    async def serving(model):
        return Serving("v1", T0 - timedelta(days=2))

    async def reports(model, version):
        return None

    return Retrainer(store=mem, runs=mem, rollouts=mem, serving=serving, reports=reports, model_repo_path=repo,
                     clock=clock)


def step(retrainer: Retrainer, mem: Memory) -> RetrainPolicy:
    return asyncio.run(retrainer.reconcile(mem.policy))


def test_a_request_runs_to_a_rollout_and_its_verdict(tmp_path):
    mem = Memory(policy(), tmp_path)
    retrainer = loop(mem, tmp_path, lambda: T0 + timedelta(minutes=1))
    p = step(retrainer, mem)
    run = p.status.last_run
    assert p.status.phase is RetrainPhase.TRAINING and run.trigger.value == "Manual" and run.job == "fraud-20261201-120100"
    env = mem.started[run.job]
    assert env["FLYWHEEL_TRAINER_RUN_ID"] == run.job and env["FLYWHEEL_TRAINER_STABLE_VERSION"] == "v1"
    assert env["FLYWHEEL_TRAINER_WINDOW"] == "720h" and env["FLYWHEEL_TRAINER_GATE_MIN_PR_AUC_GAIN"] == "0.0"

    assert step(retrainer, mem).status.phase is RetrainPhase.TRAINING  # still running: nothing changes
    publish(tmp_path, "v2", run.job)
    mem.run_states[run.job] = RunState("succeeded")
    p = step(retrainer, mem)
    assert p.status.phase is RetrainPhase.ROLLING_OUT and p.status.last_run.version == "v2"
    rollout = mem.rollouts["fraud-v2"]
    assert rollout["spec"]["model"] == "fraud" and rollout["spec"]["stable"] == {"version": "v1"}
    assert rollout["spec"]["candidate"] == {"version": "v2"} and rollout["spec"]["strategy"]["type"] == "Canary"
    assert rollout["metadata"]["labels"] == {"team": "risk", POLICY_LABEL: "fraud"}
    assert rollout["metadata"]["ownerReferences"][0]["uid"] == "u-1"

    mem.rollout_phase["fraud-v2"] = "Succeeded"
    p = step(retrainer, mem)
    assert p.status.phase is RetrainPhase.IDLE and p.status.last_run.verdict == "Succeeded"
    assert p.status.history[-1]["job"] == run.job and p.status.history[-1]["rollout"] == "fraud-v2"
    assert [reason for reason, _ in mem.events] == ["TrainingStarted", "RolloutCreated", "RolloutSucceeded"]
    # The request was answered: the next pass does not start another run (and the cool-down holds anyway).
    assert step(retrainer, mem).status.phase is RetrainPhase.IDLE and len(mem.started) == 1


def test_a_candidate_its_gates_rejected_gets_no_rollout(tmp_path):
    mem = Memory(policy(), tmp_path)
    retrainer = loop(mem, tmp_path, lambda: T0 + timedelta(minutes=1))
    run = step(retrainer, mem).status.last_run
    publish(tmp_path, "v2", run.job, rejected=True)
    mem.run_states[run.job] = RunState("failed", "Job failed: PodFailurePolicy")
    p = step(retrainer, mem)
    assert p.status.phase is RetrainPhase.IDLE and p.status.last_run.gates_passed is False
    assert p.status.last_run.verdict == "CandidateRejected" and "pr_auc_gain" in p.status.message
    assert mem.rollouts == {} and mem.events[-1][0] == "CandidateRejected"


def test_a_run_that_published_nothing_fails_the_policy_until_the_next_run(tmp_path):
    publish(tmp_path, "v2", "someone-else")  # another run's version is not this run's
    mem = Memory(policy(), tmp_path)
    retrainer = loop(mem, tmp_path, lambda: T0 + timedelta(minutes=1))
    run = step(retrainer, mem).status.last_run
    mem.run_states[run.job] = RunState("failed", "Job failed: BackoffLimitExceeded")
    p = step(retrainer, mem)
    assert p.status.phase is RetrainPhase.FAILED and "BackoffLimitExceeded" in p.status.message
    assert mem.rollouts == {} and mem.events[-1] == ("TrainingFailed", f"trainer run {run.job}: "
                                                     "Job failed: BackoffLimitExceeded")
    assert step(retrainer, mem).status.phase is RetrainPhase.FAILED  # no new request, cooling down: stays Failed


def test_a_run_recorded_but_never_started_is_started_under_the_same_name(tmp_path):
    mem = Memory(policy(), tmp_path)
    retrainer = loop(mem, tmp_path, lambda: T0 + timedelta(minutes=1))
    run = step(retrainer, mem).status.last_run
    mem.started.clear()
    mem.run_states.clear()  # as if the controller died between writing status and creating the Job
    assert step(retrainer, mem).status.phase is RetrainPhase.TRAINING
    assert list(mem.started) == [run.job]


def test_a_deleted_rollout_ends_the_run(tmp_path):
    mem = Memory(policy(), tmp_path)
    retrainer = loop(mem, tmp_path, lambda: T0 + timedelta(minutes=1))
    run = step(retrainer, mem).status.last_run
    publish(tmp_path, "v2", run.job)
    mem.run_states[run.job] = RunState("succeeded")
    step(retrainer, mem)
    mem.rollouts.clear()
    p = step(retrainer, mem)
    assert p.status.phase is RetrainPhase.IDLE and p.status.last_run.verdict == "Deleted"


@pytest.mark.parametrize(("spec_edits", "repo", "says"), [
    ({"suspend": True}, True, "suspended"),
    ({}, False, "no model repository"),
])
def test_no_run_starts_when_it_cannot_or_may_not(tmp_path, spec_edits, repo, says):
    mem = Memory(policy(**spec_edits), tmp_path)
    p = step(loop(mem, tmp_path if repo else None, lambda: T0 + timedelta(minutes=1)), mem)
    assert p.status.phase in (RetrainPhase.IDLE, RetrainPhase.SUSPENDED) and says in p.status.message
    assert mem.started == {}


def test_names_fit_kubernetes_and_the_job_is_the_cronjobs_template_with_the_run_added():
    long = RetrainPolicy.model_validate({"metadata": {"name": "a" * 63, "uid": "u"}, "spec": policy().spec.model_dump(
        by_alias=True)})
    assert len(run_name(long, T0)) <= 63
    cronjob = {"metadata": {"name": "flywheel-trainer"}, "spec": {"jobTemplate": {
        "metadata": {"labels": {"app.kubernetes.io/component": "trainer"}},
        "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "trainer", "image": "flywheel/trainer@sha256:" + "0" * 64,
             "env": [{"name": "FLYWHEEL_TRAINER_MODEL", "value": "old"}, {"name": "HOME", "value": "/tmp"}]}]}}}}}}
    env = {"FLYWHEEL_TRAINER_MODEL": "fraud", "FLYWHEEL_TRAINER_RUN_ID": "fraud-1"}
    job = job_from_cronjob(cronjob, policy(), "fraud-1", env)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("flywheel/trainer@sha256:")
    assert container["env"] == [{"name": "HOME", "value": "/tmp"}, {"name": "FLYWHEEL_TRAINER_MODEL", "value": "fraud"},
                                {"name": "FLYWHEEL_TRAINER_RUN_ID", "value": "fraud-1"}]
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [6]
    assert job["metadata"]["labels"][POLICY_LABEL] == "fraud" and job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert cronjob["spec"]["jobTemplate"]["spec"].get("podFailurePolicy") is None  # the template is not edited


def test_the_rollout_has_no_stable_when_nothing_serves_yet():
    rollout = rollout_object(policy(), _run(), None, "v1")
    assert "stable" not in rollout["spec"] and rollout["metadata"]["name"] == "fraud-v1"
    assert trainer_env(policy(), _run(), None)["FLYWHEEL_TRAINER_STABLE_VERSION"] == ""


def _run() -> RetrainRun:
    return RetrainRun(job="fraud-1")


def test_a_version_not_visible_yet_is_waited_for_a_minute_after_the_run_ended(tmp_path):
    now = [T0 + timedelta(minutes=1)]
    mem = Memory(policy(), tmp_path)
    retrainer = loop(mem, tmp_path, lambda: now[0])
    run = step(retrainer, mem).status.last_run
    mem.run_states[run.job] = RunState("succeeded", ended_at=now[0])
    now[0] += timedelta(seconds=30)
    assert step(retrainer, mem).status.phase is RetrainPhase.TRAINING  # the volume may not show it yet
    publish(tmp_path, "v2", run.job)
    assert step(retrainer, mem).status.phase is RetrainPhase.ROLLING_OUT


def test_a_stateful_policy_warm_starts_from_the_serving_version(tmp_path):
    mem = Memory(policy(training={"mode": "Stateful", "window": "168h", "minNewLabels": 0}), tmp_path)
    run = step(loop(mem, tmp_path, lambda: T0 + timedelta(minutes=1)), mem).status.last_run
    env = mem.started[run.job]
    assert env["FLYWHEEL_TRAINER_WARM_START"] == "v1" and env["FLYWHEEL_TRAINER_WINDOW"] == "168h"
    assert "FLYWHEEL_TRAINER_WARM_START" not in trainer_env(policy(), _run(), "v1")  # Stateless: from scratch


def test_a_stateful_policy_with_nothing_serving_does_not_start(tmp_path):
    mem = Memory(policy(training={"mode": "Stateful", "minNewLabels": 0}), tmp_path)
    retrainer = loop(mem, tmp_path, lambda: T0 + timedelta(minutes=1))

    async def nothing(model):
        return None

    retrainer.serving = nothing
    p = step(retrainer, mem)
    assert p.status.phase is RetrainPhase.IDLE and "none serves yet" in p.status.message and mem.started == {}
