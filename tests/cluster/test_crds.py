"""The ModelRollout CRD on a real API server: one source (manifests/crds/) copied into the chart, examples
accepted, defaults filled in, wrong rollouts refused at apply time with the field named (structural schema
and CEL rules), status written only through its subresource, and `kubectl get modelrollouts` columns.
Also the controller's RBAC as the API server's authorizer sees it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import yaml
from kubernetes import client

from chart_fixtures import CHART, MODELROLLOUT_CRD, crd_established
from conftest import REPO, wait_for

EXAMPLES = sorted((REPO / "manifests" / "examples").glob("modelrollout-*.yaml"))
CANARY = REPO / "manifests" / "examples" / "modelrollout-canary.yaml"


def test_chart_crds_are_byte_copies_of_manifests_crds():
    sources = {p.name: p.read_bytes() for p in (REPO / "manifests" / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert sources, "manifests/crds/ is empty"
    assert copies == sources, "charts/flywheel/crds/ differs from manifests/crds/: run `make manifests`"


@pytest.fixture(scope="module")
def modelrollout_crd(api, tools) -> None:
    """The CRD applied from manifests/crds/ (left in place: on a shared cluster, deleting a CRD deletes every
    ModelRollout)."""
    tools.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(MODELROLLOUT_CRD))
    ext = client.ApiextensionsV1Api(api)
    wait_for("ModelRollout CRD Established", lambda: crd_established(ext, "modelrollouts.flywheel.dev"))


@pytest.fixture
def rollouts(modelrollout_crd, namespace, tools) -> Iterator[tuple[str, Callable]]:
    yield namespace, tools.kubectl


def _apply(kubectl, namespace: str, doc: dict, *, dry_run: bool = False, ok: bool = True):
    argv = ["apply", "-n", namespace, "--validate=strict", "-f", "-"]
    if dry_run:
        argv.append("--dry-run=server")
    return kubectl(*argv, stdin=yaml.safe_dump(doc), ok=ok)


def _get(kubectl, namespace: str, name: str) -> dict:
    return json.loads(kubectl("get", "modelrollout", name, "-n", namespace, "-o", "json").stdout)


def test_every_example_is_accepted_and_listed_with_its_columns(rollouts):
    ns, kubectl = rollouts
    for path in EXAMPLES:
        kubectl("apply", "-n", ns, "--validate=strict", "-f", str(path))
    table = kubectl("get", "modelrollouts", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "STRATEGY", "STABLE", "CANDIDATE", "WEIGHT", "STEP", "PHASE", "AGE"]
    rows = {line.split()[0]: line.split()[1:4] for line in table[1:]}
    assert rows == {"fraud-v2-bluegreen": ["fraud", "BlueGreen", "v2"], "fraud-v2-canary": ["fraud", "Canary", "v2"],
                    "fraud-v2-shadow": ["fraud", "Shadow", "v2"]}
    # The short name and the category work as kubectl users expect.
    assert len(kubectl("get", "mro", "-n", ns, "-o", "name").stdout.split()) == len(EXAMPLES)
    assert len(kubectl("get", "flywheel", "-n", ns, "-o", "name").stdout.split()) == len(EXAMPLES)


def test_the_api_server_fills_in_the_defaults(rollouts):
    ns, kubectl = rollouts
    _apply(kubectl, ns, {"apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelRollout",
                         "metadata": {"name": "bare-shadow"},
                         "spec": {"model": "fraud", "candidate": {"version": "v3"},
                                  "strategy": {"type": "Shadow", "shadow": {}}}})
    spec = _get(kubectl, ns, "bare-shadow")["spec"]
    assert spec["strategy"]["shadow"] == {"mirrorPercent": 100, "duration": "30m", "promote": False}
    assert spec["analysis"] == {"interval": "1m", "minSamples": 100, "failureLimit": 2, "inconclusiveLimit": 5,
                                "alpha": 0.05, "evidence": "Sequential"}
    assert spec["rollback"] == {"automatic": True}


def _canary() -> dict:
    return yaml.safe_load(CANARY.read_text())


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


BAD = {  # what is wrong: (edit of the canary example, text the refusal must contain)
    "weight over 100": (_set("spec.strategy.canary.steps.0.setWeight", 150), "spec.strategy.canary.steps[0].setWeight"),
    "unknown field": (_set("spec.strategy.canary.stepz", []), 'unknown field "spec.strategy.canary.stepz"'),
    "unknown strategy": (_set("spec.strategy.type", "Linear"), 'spec.strategy.type: Unsupported value: "Linear"'),
    "same versions": (_set("spec.candidate.version", "v1"), "candidate.version must differ from stable.version"),
    "step with two actions": (_set("spec.strategy.canary.steps.0.pause", {}), "exactly one of setWeight or pause"),
    "block of another strategy": (_set("spec.strategy.shadow", {}), "shadow may only be set when type is Shadow"),
    "prometheus without query": (_set("spec.analysis.metrics.0.provider", "prometheus"),
                                 "a prometheus metric needs a query"),
    "metric without bounds": (lambda d: d["spec"]["analysis"]["metrics"][0].pop("max"),
                              "a metric needs max, min or both"),
    "duration in words": (_set("spec.analysis.interval", "5 minutes"), "spec.analysis.interval"),
    "model not a name": (_set("spec.model", "Fraud Model"), "spec.model"),
    "no steps": (_set("spec.strategy.canary.steps", []), "spec.strategy.canary.steps"),
    "no candidate": (lambda d: d["spec"].pop("candidate"), "spec.candidate: Required value"),
    "duplicate metric names": (_set("spec.analysis.metrics.1.name", "errors"), "spec.analysis.metrics[1]"),
    "both sticky keys": (_set("spec.strategy.canary.stickiness.cookie", "sid"), "exactly one of header or cookie"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_wrong_rollout_is_refused_naming_what_is_wrong(rollouts, case):
    ns, kubectl = rollouts
    edit, named = BAD[case]
    doc = _canary()
    edit(doc)
    done = _apply(kubectl, ns, doc, dry_run=True, ok=False)
    assert done.returncode != 0, f"{case}: accepted"
    assert named in done.stderr, done.stderr


def test_status_changes_only_through_the_status_subresource(rollouts):
    ns, kubectl = rollouts
    kubectl("apply", "-n", ns, "-f", str(CANARY))
    status = {"phase": "Progressing", "stableVersion": "v1", "candidateWeight": 25, "currentStepIndex": 2,
              "currentStep": "3/6 setWeight 25"}
    kubectl("patch", "modelrollout", "fraud-v2-canary", "-n", ns, "--type=merge", "-p", json.dumps({"status": status}))
    assert "status" not in _get(kubectl, ns, "fraud-v2-canary")  # ignored on the main resource
    kubectl("patch", "modelrollout", "fraud-v2-canary", "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))
    assert _get(kubectl, ns, "fraud-v2-canary")["status"] == status
    row = kubectl("get", "modelrollout", "fraud-v2-canary", "-n", ns, "--no-headers").stdout.split()
    assert row[3:8] == ["v1", "v2", "25", "3/6", "setWeight"]  # STEP is "3/6 setWeight 25"
    bad = kubectl("patch", "modelrollout", "fraud-v2-canary", "-n", ns, "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": {"phase": "Winning"}}), ok=False)
    assert bad.returncode != 0 and "status.phase" in bad.stderr


def test_controller_rbac_reaches_modelrollouts_in_its_namespace_only(rollouts, tools):
    ns, kubectl = rollouts
    docs = tools.render(namespace=ns, extra=("--set", "controller.enabled=true",
                                             "--show-only", "templates/controller-serviceaccount.yaml",
                                             "--show-only", "templates/controller-role.yaml",
                                             "--show-only", "templates/controller-rolebinding.yaml"))
    kubectl("apply", "-n", ns, "-f", "-", stdin="\n---\n".join(yaml.safe_dump(d) for d in docs))
    user = f"system:serviceaccount:{ns}:flywheel-controller"

    def can(verb: str, resource: str, namespace: str = ns) -> bool:
        done = kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", user, ok=False)
        return done.stdout.strip() == "yes"

    assert can("watch", "modelrollouts.flywheel.dev") and can("patch", "modelrollouts.flywheel.dev/status")
    assert can("create", "events") and can("list", "endpointslices.discovery.k8s.io")
    assert can("update", "leases.coordination.k8s.io") and can("patch", "modelrollouts.flywheel.dev")  # finalizer
    assert not can("delete", "modelrollouts.flywheel.dev"), "the controller never deletes a user's rollout"
    assert not can("get", "deployments.apps"), "traffic moves through the router, not by touching workloads"
    assert not can("get", "configmaps"), "routes are written through the router's admin API only"
    assert not can("get", "secrets")
    assert not can("list", "modelrollouts.flywheel.dev", "kube-system"), "namespaced, not cluster-wide"
