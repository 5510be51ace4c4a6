"""A RetrainPolicy on a real control plane: `kubectl flywheel retrain` -> a trainer Job made from the chart's own
CronJob (kwok completes it) -> the version that run published -> the ModelRollout -> its verdict, with the
controller as a process authenticated as the chart's ServiceAccount, so its Role is proven by use, and
`kubectl auth can-i` shows the Role grew by what the loop needs only.

kwok runs no containers, so the test writes the version the Job's trainer would have published (metadata.json
naming the Job in lineage.run) into the model repository the controller reads; the trainer writing it is proven
in services/trainer/tests (lineage.run) and the local loop in tests/integration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from chart_fixtures import MODELROLLOUT_CRD, crd_established
from conftest import REPO, wait_for
from controller_rig import service_account_env

sys.path.insert(0, str(REPO / "scripts"))
from localstack import Ports, Stack, free_port, router_service  # noqa: E402

CONTROLLER_BIN = REPO / "services" / "controller" / ".venv" / "bin"
RETRAINPOLICY_CRD = REPO / "manifests" / "crds" / "flywheel.dev_retrainpolicies.yaml"
SA = "flywheel-controller"
TRAINER = "flywheel-trainer"  # the chart's CronJob, release "flywheel"


def _publish(repo: Path, version: str, run: str | None) -> None:
    directory = repo / "fraud" / version
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"model": "fraud", "version": version, "lineage": {"cutoff": "2026-11-29T00:00:00Z", "run": {"id": run}}}
    (directory / "metadata.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def loop_ns(api, tools, storage_class) -> Iterator[str]:
    """A namespace with both CRDs, the chart's controller ServiceAccount/Role/RoleBinding, its trainer CronJob
    and the two claims the CronJob's pods mount (bound to the module's static volumes)."""
    from kubernetes import client

    from conftest import _make_namespace

    for crd, name in ((MODELROLLOUT_CRD, "modelrollouts.flywheel.dev"),
                      (RETRAINPOLICY_CRD, "retrainpolicies.flywheel.dev")):
        tools.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        wait_for(f"{name} Established", lambda n=name: crd_established(client.ApiextensionsV1Api(api), n))
    for ns in _make_namespace(api, {}):
        shown = ("controller-serviceaccount", "controller-role", "controller-rolebinding", "trainer-cronjob",
                 "model-repo-persistentvolumeclaim", "feature-data-persistentvolumeclaim")
        extra = tuple(a for t in shown for a in ("--show-only", f"templates/{t}.yaml")) + (
            "--set", f"modelRepo.pvc.storageClassName={storage_class}",
            "--set", f"features.data.storageClassName={storage_class}")
        docs = tools.render(namespace=ns, extra=extra)
        tools.kubectl("apply", "-n", ns, "-f", "-", stdin="\n---\n".join(yaml.safe_dump(d) for d in docs))
        yield ns


@pytest.fixture(scope="module")
def router(tmp_path_factory) -> Iterator[dict]:
    """The router on loopback with the route at v1 (no predictor: the loop only reads and writes routes)."""
    work = tmp_path_factory.mktemp("retrain-router")
    data = work / "data"
    ports = Ports(router=free_port(), router_admin=free_port())
    with Stack([router_service(data, ports, "http://127.0.0.1:9")], work / "logs"):
        admin = f"http://127.0.0.1:{ports.router_admin}"
        token = data / "router" / "token"
        _admin(admin, token, "PUT", "/v1/routes/fraud", {"stable": {"version": "v1"}, "generation": 0})
        yield {"admin": admin, "token": token}


def _admin(admin: str, token: Path, method: str, path: str, body: dict | None = None) -> dict:
    import urllib.request

    request = urllib.request.Request(admin + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"authorization": f"Bearer {token.read_text().strip()}",
                                              "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def controller(cluster, tools, loop_ns, router, tmp_path_factory) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("retrain-controller")
    repo = work / "model_repo"
    _publish(repo, "v1", None)
    env = {**os.environ,
           **service_account_env(cluster.kubeconfig, tools.kubectl, loop_ns, SA, work / "sa"),
           "FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL": router["admin"],
           "FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE": str(router["token"]),
           "FLYWHEEL_CONTROLLER_HTTP_PORT": "0", "FLYWHEEL_CONTROLLER_RESYNC_SECONDS": "1",
           "FLYWHEEL_CONTROLLER_MODEL_REPO": str(repo), "FLYWHEEL_CONTROLLER_TRAINER_CRONJOB": TRAINER,
           "FLYWHEEL_CONTROLLER_RETRAIN_INTERVAL_S": "0.5", "FLYWHEEL_CONTROLLER_IDENTITY": "retrain-test"}
    log = work / "controller.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([str(CONTROLLER_BIN / "python"), "-m", "flywheel_controller"], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        yield {"repo": repo, "log": log}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _plugin(tools, ns: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**tools.env, "PATH": f"{CONTROLLER_BIN}:{Path(tools.kubectl_bin).parent}:{os.environ['PATH']}",
           "KUBECTL": tools.kubectl_bin}
    return subprocess.run([tools.kubectl_bin, "flywheel", "-n", ns, *argv], env=env, capture_output=True, text=True,
                          timeout=90)


def _policy(tools, ns: str) -> dict:
    return json.loads(tools.kubectl("get", "retrainpolicy", "fraud", "-n", ns, "-o", "json").stdout)


def test_the_role_grows_by_what_the_loop_needs_only(tools, loop_ns):
    def can(verb: str, resource: str) -> bool:
        resource, _, sub = resource.partition(".dev/")  # a subresource: can-i takes it as a flag
        args = [resource + ".dev", f"--subresource={sub}"] if sub else [resource]
        done = tools.kubectl("auth", "can-i", verb, *args, "-n", loop_ns,
                             f"--as=system:serviceaccount:{loop_ns}:{SA}", ok=False)
        return done.stdout.strip() == "yes"

    allowed = [("create", "jobs.batch"), ("get", "jobs.batch"), ("get", f"cronjobs.batch/{TRAINER}"),
               ("list", "retrainpolicies.flywheel.dev"), ("watch", "retrainpolicies.flywheel.dev"),
               ("patch", "retrainpolicies.flywheel.dev/status"), ("create", "modelrollouts.flywheel.dev")]
    denied = [("delete", "jobs.batch"), ("update", "jobs.batch"), ("create", "pods"), ("get", "secrets"),
              ("get", "cronjobs.batch/other"), ("create", "cronjobs.batch"), ("patch", "retrainpolicies.flywheel.dev"),
              ("delete", "retrainpolicies.flywheel.dev"), ("delete", "modelrollouts.flywheel.dev")]
    assert [a for a in allowed if not can(*a)] == []
    assert [d for d in denied if can(*d)] == []


def test_kubectl_flywheel_retrain_runs_a_job_from_the_chart_template_to_a_rollout(tools, loop_ns, controller):
    policy = {"apiVersion": "flywheel.dev/v1alpha1", "kind": "RetrainPolicy", "metadata": {"name": "fraud"},
              "spec": {"model": "fraud", "training": {"minNewLabels": 0}, "cooldown": "1h",
                       "rolloutTemplate": {"spec": {
                           "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 50}]}},
                           "analysis": {"interval": "1s", "minSamples": 1}}}}}
    tools.kubectl("apply", "-n", loop_ns, "-f", "-", stdin=yaml.safe_dump(policy))
    done = _plugin(tools, loop_ns, "retrain", "fraud")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{controller['log'].read_text()[-3000:]}"
    status = _policy(tools, loop_ns)["status"]
    run = status["lastRun"]
    assert status["phase"] == "Training" and run["trigger"] == "Manual" and run["job"] in done.stdout

    job = json.loads(tools.kubectl("get", "job", run["job"], "-n", loop_ns, "-o", "json").stdout)
    cronjob = json.loads(tools.kubectl("get", "cronjob", TRAINER, "-n", loop_ns, "-o", "json").stdout)
    pod, template = job["spec"]["template"]["spec"], cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == template["containers"][0]["image"]
    assert pod["volumes"] == template["volumes"] and pod["securityContext"] == template["securityContext"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["FLYWHEEL_TRAINER_RUN_ID"] == run["job"] and env["FLYWHEEL_TRAINER_STABLE_VERSION"] == "v1"
    assert env["FLYWHEEL_TRAINER_RUN_POLICY"] == "fraud" and env["FLYWHEEL_TRAINER_WINDOW"] == "720h"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "RetrainPolicy"
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [6]

    _publish(controller["repo"], "v2", run["job"])  # what the Job's trainer publishes (kwok runs no containers)
    wait_for("the Job Complete (kwok)", lambda: any(
        c["type"] == "Complete" and c["status"] == "True" for c in (json.loads(tools.kubectl(
            "get", "job", run["job"], "-n", loop_ns, "-o", "json").stdout).get("status") or {}).get("conditions") or []),
        timeout=60)
    wait_for("the policy RollingOut", lambda: _policy(tools, loop_ns)["status"]["phase"] == "RollingOut", timeout=60)
    rollout = json.loads(tools.kubectl("get", "modelrollout", "fraud-v2", "-n", loop_ns, "-o", "json").stdout)
    assert rollout["spec"]["stable"] == {"version": "v1"} and rollout["spec"]["candidate"] == {"version": "v2"}
    assert rollout["metadata"]["labels"]["flywheel.dev/retrainpolicy"] == "fraud"

    def ended() -> bool:
        return _policy(tools, loop_ns)["status"]["phase"] == "Idle"

    wait_for("the rollout's verdict on the policy", ended, timeout=120)
    status = _policy(tools, loop_ns)["status"]
    assert status["lastRun"]["verdict"] == "Succeeded" and status["lastRun"]["version"] == "v2", status
    assert status["history"][-1]["rollout"] == "fraud-v2"
    events = json.loads(tools.kubectl("get", "events", "-n", loop_ns, "--field-selector",
                                      "involvedObject.kind=RetrainPolicy", "-o", "json").stdout)["items"]
    reasons = [e["reason"] for e in sorted(events, key=lambda e: e.get("eventTime") or e["lastTimestamp"])]
    assert reasons == ["TrainingStarted", "RolloutCreated", "RolloutSucceeded"], reasons

