"""The rollout controller on a real control plane (rung 3): the controller as a process against the real
kube-apiserver, with the chart's ServiceAccount and Role (least privilege proven by use), moving real traffic
between real model versions: a predictor serving three published versions and the router in front of it, as
local processes, with live requests flowing through the router for the whole module.

v1 and v2 are fast; v3 answers correctly but ~15 ms slower (a heavier model), so a latency bound fails it.
`kubectl flywheel` is the project's plugin on PATH, as a user runs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from chart_fixtures import MODELROLLOUT_CRD, crd_established
from conftest import REPO, wait_for
from controller_rig import Traffic, service_account_env, stable_only

sys.path.insert(0, str(REPO / "scripts"))
from localstack import Ports, Service, Stack, free_port, router_service, venv_python  # noqa: E402

CONTROLLER_BIN = REPO / "services" / "controller" / ".venv" / "bin"
EXAMPLES = sorted((REPO / "manifests" / "examples").glob("modelrollout-*.yaml"))
SA = "flywheel-controller"


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def serving(tmp_path_factory) -> Iterator[dict]:
    """Predictor (v1, v2, v3) + router on loopback, the route at v1, and live traffic through the router."""
    work = tmp_path_factory.mktemp("controller-serving")
    repo, data = work / "model_repo", work / "data"
    subprocess.run([venv_python("services/predictor"), str(REPO / "tests" / "cluster" / "rollout_models.py"),
                    str(repo)], check=True, capture_output=True, timeout=300)
    ports = Ports(predictor=free_port(), router=free_port(), router_admin=free_port())
    predictor = Service(
        "predictor", [venv_python("services/predictor"), "-m", "flywheel_predictor"],
        {"FLYWHEEL_PREDICTOR_MODEL_REPO": str(repo), "FLYWHEEL_PREDICTOR_HTTP_PORT": str(ports.predictor),
         "FLYWHEEL_DATA_DIR": str(data)},
        f"http://127.0.0.1:{ports.predictor}/v2/health/ready",
    )
    router = router_service(data, ports, f"http://127.0.0.1:{ports.predictor}")
    token = data / "router" / "token"
    with Stack([predictor, router], work / "logs") as stack:
        info = {"ports": ports, "token": token, "stack": stack,
                "admin": f"http://127.0.0.1:{ports.router_admin}", "routes_file": data / "router" / "routes.json"}
        _put_route(info, {"stable": {"version": "v1"}, "generation": 0})
        traffic = Traffic(f"http://127.0.0.1:{ports.router}/v2/models/fraud/infer")
        traffic.start()
        try:
            yield info
        finally:
            traffic.stop()


def _admin(serving: dict, method: str, path: str, body: dict | None = None) -> dict | None:
    headers = {"authorization": f"Bearer {serving['token'].read_text().strip()}", "content-type": "application/json"}
    request = urllib.request.Request(serving["admin"] + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def _route(serving: dict) -> dict:
    route = _admin(serving, "GET", "/v1/routes/fraud")
    assert route is not None
    return route


def _settled_route(serving: dict, check, what: str, timeout: float = 5.0) -> dict:
    """The route once `check` holds: the router's admin GET answers from the routes it has loaded, which follow
    a write within its poll interval (0.25 s), so a read right after a write may still show the one before."""
    wait_for(what, lambda: check(_route(serving)), timeout=timeout)
    return _route(serving)


def _stored_route(serving: dict) -> dict:
    """The route in the router's store (its routes file), which an admin PUT has written before it answers."""
    return json.loads(serving["routes_file"].read_text())["routes"]["fraud"]


def _put_route(serving: dict, body: dict) -> dict:
    current = _admin(serving, "GET", "/v1/routes/fraud")
    return _admin(serving, "PUT", "/v1/routes/fraud", {**body, "generation": (current or {}).get("generation", 0)})


@pytest.fixture(scope="module")
def controller_ns(api, tools, cluster) -> Iterator[str]:  # noqa: F811
    """A namespace with the CRD and the chart's controller ServiceAccount, Role and RoleBinding."""
    from conftest import _make_namespace

    tools.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(MODELROLLOUT_CRD))
    from kubernetes import client

    wait_for("ModelRollout CRD Established",
             lambda: crd_established(client.ApiextensionsV1Api(api), "modelrollouts.flywheel.dev"))
    for ns in _make_namespace(api, {}):
        docs = tools.render(namespace=ns, extra=("--show-only", "templates/controller-serviceaccount.yaml",
                                                 "--show-only", "templates/controller-role.yaml",
                                                 "--show-only", "templates/controller-rolebinding.yaml"))
        tools.kubectl("apply", "-n", ns, "-f", "-", stdin="\n---\n".join(yaml.safe_dump(d) for d in docs))
        yield ns


class Controller:
    """The controller as a process, authenticated as the chart's ServiceAccount."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        out = open(self.log, "ab")
        self.process = subprocess.Popen([str(CONTROLLER_BIN / "python"), "-m", "flywheel_controller"],
                                        env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


@pytest.fixture(scope="module")
def controller_env(cluster, tools, controller_ns, serving, tmp_path_factory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("controller-sa")
    return {
        **service_account_env(cluster.kubeconfig, tools.kubectl, controller_ns, SA, directory),
        "FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL": serving["admin"],
        "FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE": str(serving["token"]),
        "FLYWHEEL_CONTROLLER_HTTP_PORT": "0",
        "FLYWHEEL_CONTROLLER_LEASE_SECONDS": "3",
        "FLYWHEEL_CONTROLLER_RENEW_SECONDS": "1",
        "FLYWHEEL_CONTROLLER_RESYNC_SECONDS": "2",
    }


@pytest.fixture(scope="module")
def controller(controller_env, tmp_path_factory) -> Iterator[Controller]:
    log = tmp_path_factory.mktemp("controller-log") / "controller.log"
    c = Controller({**controller_env, "FLYWHEEL_CONTROLLER_IDENTITY": "controller-a"}, log)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def fresh(serving, controller_ns, tools) -> Iterator[None]:
    """Each test starts with no rollout and the router at v1 only."""
    _put_route(serving, {"stable": {"version": "v1"}})
    yield
    tools.kubectl("delete", "modelrollouts", "--all", "-n", controller_ns, "--wait=true", "--timeout=60s", ok=False)


# -------------------------------------------------------------------------------------------- helpers


def _rollout(name: str, *, stable: str, candidate: str, steps: list[dict], metrics: list[dict] | None = None,
             strategy: str = "Canary") -> dict:
    spec: dict = {"model": "fraud", "stable": {"version": stable}, "candidate": {"version": candidate},
                  "analysis": {"interval": "2s", "minSamples": 10, "failureLimit": 2,
                               "metrics": metrics if metrics is not None else LATENCY_AND_ERRORS}}
    spec["strategy"] = {"type": "Canary", "canary": {"steps": steps}} if strategy == "Canary" else strategy
    return {"apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelRollout", "metadata": {"name": name}, "spec": spec}


LATENCY_AND_ERRORS = [
    {"name": "errors", "provider": "router", "metric": "error_rate", "max": 0.05},
    # Relative to the stable over the same interval: a busy test machine slows both versions alike.
    {"name": "latency", "provider": "router", "metric": "latency_p99_seconds", "relativeToStable": True, "max": 0.005},
]


def _apply(tools, ns: str, doc: dict) -> None:  # noqa: F811
    tools.kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(doc))


def _get(tools, ns: str, name: str) -> dict:  # noqa: F811
    return json.loads(tools.kubectl("get", "modelrollout", name, "-n", ns, "-o", "json").stdout)


def _status(tools, ns: str, name: str) -> dict:  # noqa: F811
    return _get(tools, ns, name).get("status") or {}


def _wait_phase(tools, ns: str, name: str, phases: set[str], controller: Controller, timeout: float = 90) -> dict:  # noqa: F811
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = _status(tools, ns, name)
        if status.get("phase") in phases:
            return status
        time.sleep(0.25)
    raise AssertionError(f"{name} not in {phases} after {timeout}s: {json.dumps(status, indent=1)}\n"
                         f"controller log:\n{controller.tail()}")


def _plugin(tools, ns: str, *argv: str, ok: bool = True) -> subprocess.CompletedProcess:  # noqa: F811
    env = {**tools.env, "PATH": f"{CONTROLLER_BIN}:{Path(tools.kubectl_bin).parent}:{os.environ['PATH']}",
           "KUBECTL": tools.kubectl_bin}
    done = subprocess.run([tools.kubectl_bin, "flywheel", "-n", ns, *argv], env=env, capture_output=True, text=True,
                          timeout=90)
    if ok:
        assert done.returncode == 0, f"kubectl flywheel {' '.join(argv)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------------------------- tests


def test_a_good_canary_succeeds_and_the_candidate_becomes_stable(tools, controller_ns, serving, controller, fresh):
    ns = controller_ns
    _apply(tools, ns, _rollout("to-v2", stable="v1", candidate="v2", steps=[
        {"setWeight": 25}, {"pause": {"duration": "4s"}}, {"setWeight": 50}, {"pause": {"duration": "4s"}}]))
    status = _wait_phase(tools, ns, "to-v2", {"Succeeded", "RolledBack", "Failed", "Paused"}, controller)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["stableVersion"] == "v2" and status["previousStableVersion"] == "v1"
    _settled_route(serving, stable_only("v2"), "all traffic on v2")
    assert [d["action"] for d in status["decisions"]].count("SetWeight") == 2
    assert status["lastAnalysis"]["verdict"] == "Successful"
    row = tools.kubectl("get", "mro", "to-v2", "-n", ns, "--no-headers").stdout.split()
    assert row[1:4] == ["fraud", "Canary", "v2"] and "Succeeded" in row
    events = tools.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=to-v2",
                           "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert {"Started", "SetWeight", "Succeeded"} <= set(events), events


def test_a_slow_candidate_is_rolled_back_within_5s_of_the_failing_verdict(tools, controller_ns, serving, controller,
                                                                          fresh):
    ns = controller_ns
    _apply(tools, ns, _rollout("to-v3", stable="v1", candidate="v3", steps=[
        {"setWeight": 30}, {"pause": {"duration": "60s"}}, {"setWeight": 60}]))
    status = _wait_phase(tools, ns, "to-v3", {"Succeeded", "RolledBack", "Failed"}, controller)
    assert status["phase"] == "RolledBack", json.dumps(status, indent=1)
    failing = status["lastAnalysis"]
    assert failing["verdict"] == "Failed"
    latency = next(m for m in failing["metrics"] if m["name"] == "latency")
    assert latency["verdict"] == "Failed" and latency["value"] > 0.005
    route = _settled_route(serving, stable_only("v1"), "all traffic back on v1")
    back_after = (_time(route["updatedAt"]) - _time(failing["time"])).total_seconds()
    assert back_after <= 5.0, f"traffic back on the stable {back_after:.2f} s after the failing verdict"


def test_kubectl_flywheel_promote_then_undo(tools, controller_ns, serving, controller, fresh):
    ns = controller_ns
    _apply(tools, ns, _rollout("held", stable="v1", candidate="v2", metrics=[], steps=[
        {"setWeight": 20}, {"pause": {}}]))
    status = _wait_phase(tools, ns, "held", {"Paused"}, controller)
    assert status["candidateWeight"] == 20
    _settled_route(serving, lambda r: r.get("candidateWeight") == 20, "20% on v2")
    shown = _plugin(tools, ns, "status", "held").stdout
    assert "Paused" in shown and "v2" in shown
    wrong = _plugin(tools, ns, "undo", "held", ok=False)
    assert wrong.returncode == 2 and "Paused" in (wrong.stderr + wrong.stdout)
    _plugin(tools, ns, "promote", "held")
    status = _wait_phase(tools, ns, "held", {"Succeeded"}, controller)
    _settled_route(serving, stable_only("v2"), "all traffic on v2")
    _plugin(tools, ns, "undo", "held")
    status = _wait_phase(tools, ns, "held", {"RolledBack"}, controller)
    assert status["stableVersion"] == "v1"
    _settled_route(serving, stable_only("v1"), "all traffic back on v1")
    assert "no ModelRollout 'nope'" in _plugin(tools, ns, "status", "nope", ok=False).stderr


def test_kubectl_flywheel_abort_returns_traffic_to_the_stable(tools, controller_ns, serving, controller, fresh):
    ns = controller_ns
    _apply(tools, ns, _rollout("aborted", stable="v1", candidate="v2", metrics=[], steps=[
        {"setWeight": 40}, {"pause": {}}]))
    _wait_phase(tools, ns, "aborted", {"Paused"}, controller)
    _plugin(tools, ns, "abort", "aborted")
    status = _wait_phase(tools, ns, "aborted", {"Aborted"}, controller)
    assert status["candidateWeight"] == 0
    _settled_route(serving, stable_only("v1"), "all traffic back on v1")


def test_an_intent_survives_a_gitops_reapply_of_the_unchanged_spec(tools, controller_ns, serving, controller, fresh):
    ns = controller_ns
    doc = _rollout("gitops", stable="v1", candidate="v2", metrics=[], steps=[{"setWeight": 10}, {"pause": {}}])
    _apply(tools, ns, doc)
    _wait_phase(tools, ns, "gitops", {"Paused"}, controller)
    os.kill(controller.process.pid, signal.SIGSTOP)  # the intent must wait in status while the sync happens
    try:
        _plugin(tools, ns, "promote", "gitops", "--no-wait")
        _apply(tools, ns, doc)  # what Argo CD / Flux do on every sync (apply, or replace of the whole object)
        tools.kubectl("replace", "-n", ns, "-f", "-", stdin=json.dumps(_get(tools, ns, "gitops")))
        assert _status(tools, ns, "gitops")["intent"]["action"] == "promote"
    finally:
        os.kill(controller.process.pid, signal.SIGCONT)
    _wait_phase(tools, ns, "gitops", {"Succeeded"}, controller)


def test_two_rollouts_for_one_model_the_later_is_refused(tools, controller_ns, serving, controller, fresh):
    ns = controller_ns
    _apply(tools, ns, _rollout("first", stable="v1", candidate="v2", metrics=[], steps=[{"setWeight": 10},
                                                                                        {"pause": {}}]))
    _wait_phase(tools, ns, "first", {"Paused"}, controller)
    _apply(tools, ns, _rollout("second", stable="v1", candidate="v3", metrics=[], steps=[{"setWeight": 50}]))
    status = _wait_phase(tools, ns, "second", {"Failed"}, controller)
    assert "first" in status["message"], status
    time.sleep(1.0)  # the router has loaded whatever was written
    assert _route(serving)["candidate"]["version"] == "v2", "the refused rollout moved no traffic"


def test_deleting_a_rollout_mid_way_returns_all_traffic_to_its_stable(tools, controller_ns, serving, controller, fresh):
    ns = controller_ns
    _apply(tools, ns, _rollout("deleted", stable="v1", candidate="v2", metrics=[], steps=[{"setWeight": 30},
                                                                                          {"pause": {}}]))
    _wait_phase(tools, ns, "deleted", {"Paused"}, controller)
    _settled_route(serving, lambda r: r.get("candidateWeight") == 30, "30% on v2")
    tools.kubectl("delete", "modelrollout", "deleted", "-n", ns, "--timeout=30s")  # waits until it is gone
    # The finalizer's promise: the stable-only route is stored before the object can go, so no wait here.
    assert stable_only("v1")(_stored_route(serving)), _stored_route(serving)
    _settled_route(serving, stable_only("v1"), "the router serving all traffic on v1")


def test_a_controller_killed_mid_rollout_resumes_with_no_double_step(tools, controller_ns, controller_env, serving,
                                                                     controller, fresh, tmp_path):
    ns = controller_ns
    steps = [{"setWeight": 10}, {"pause": {"duration": "2s"}}, {"setWeight": 20}, {"pause": {"duration": "2s"}},
             {"setWeight": 30}, {"pause": {"duration": "2s"}}, {"setWeight": 40}, {"pause": {"duration": "2s"}}]
    _apply(tools, ns, _rollout("resumed", stable="v1", candidate="v2", metrics=[], steps=steps))
    wait_for("the rollout past its second step",
             lambda: (_status(tools, ns, "resumed").get("currentStepIndex") or 0) >= 2, timeout=60)
    controller.kill()  # mid-rollout, no goodbye: its Lease must expire before another acts
    standby = Controller({**controller_env, "FLYWHEEL_CONTROLLER_IDENTITY": "controller-b"}, tmp_path / "b.log")
    standby.start()
    try:
        status = _wait_phase(tools, ns, "resumed", {"Succeeded", "RolledBack", "Failed"}, standby)
    finally:
        standby.stop()
        controller.start()  # the module's controller again, for the tests after this one
    assert status["phase"] == "Succeeded"
    weights = [d["weight"] for d in status["decisions"] if d["action"] == "SetWeight"]
    assert weights == [10, 20, 30, 40], status["decisions"]
    assert [d["action"] for d in status["decisions"]].count("Succeed") == 1
    lease = json.loads(tools.kubectl("get", "lease", "flywheel-controller", "-n", ns, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] in ("controller-a", "controller-b", "")


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_example_starts_moving_traffic_and_aborts_cleanly(tools, controller_ns, serving, controller, fresh,
                                                               example):
    ns = controller_ns
    doc = yaml.safe_load(example.read_text())
    tools.kubectl("apply", "-n", ns, "--validate=strict", "-f", str(example))
    name = doc["metadata"]["name"]
    wait_for(f"{name} started", lambda: _status(tools, ns, name).get("phase") in ("Progressing", "Paused"), timeout=30)
    kind = doc["spec"]["strategy"]["type"]
    if kind == "Canary":
        # The reconcile that starts a canary routes v2 at weight 0; the next one takes the first setWeight step.
        def moving(route: dict) -> bool:
            return route.get("candidateWeight", 0) == 5 and route.get("stickiness") == {"header": "x-card-id"}
    elif kind == "Shadow":
        def moving(route: dict) -> bool:
            return route.get("shadowPercent") == 100 and route.get("candidateWeight", 0) == 0
    else:
        def moving(route: dict) -> bool:
            return route.get("previewHeader") == "x-flywheel-preview" and route.get("candidateWeight", 0) == 0
    # The route is written after the status, and the router's admin GET follows a write within its poll interval.
    route = _settled_route(serving, lambda r: (r.get("candidate") or {}).get("version") == "v2" and moving(r),
                           f"{name}'s route", timeout=10)
    assert route["candidate"]["version"] == "v2"
    _plugin(tools, ns, "abort", name)
    assert _status(tools, ns, name)["phase"] == "Aborted"
    _settled_route(serving, stable_only("v1"), "all traffic back on v1")
