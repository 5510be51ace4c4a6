"""kserve mode against KServe's own controller (hack/cluster/kserve.py: the manager built from the pinned
KServe module, with its CRDs, config and webhooks as upstream ships them). The chart's InferenceService is
defaulted and validated by KServe's webhooks and reconciled by its controller into Deployments, Services
and HPAs in a namespace enforcing Pod Security `restricted`; kwok plays the pods. On an existing cluster
these tests use its KServe, and skip when it has none."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from chart_fixtures import CHART, third_party_dir
from conftest import REPO, wait_for

sys.path.insert(0, str(REPO / "hack" / "cluster"))
from kserve import KServe  # noqa: E402

RELEASE = "fw"
ISVC = f"{RELEASE}-flywheel"


@pytest.fixture(scope="module")
def kserve(cluster, api, tmp_path_factory) -> Iterator[None]:
    if cluster.control_plane is None:
        try:
            client.ApiextensionsV1Api(api).read_custom_resource_definition("inferenceservices.serving.kserve.io")
        except ApiException as e:
            if e.status == 404:
                pytest.skip("this cluster has no KServe")
            raise
        yield
        return
    running = KServe.start(cluster.kubeconfig, cluster.control_plane.bin_dir, third_party_dir() / "kserve",
                           tmp_path_factory.mktemp("kserve"))
    try:
        yield
    finally:
        log = running.log_tail()
        running.stop()
        print(f"kserve-manager log tail:\n{log}")


def _isvc(tools, ns) -> dict:
    return json.loads(tools.kubectl("get", "inferenceservice", ISVC, "-n", ns, "-o", "json").stdout)


def _condition(obj: dict, kind: str) -> str | None:
    return next((c["status"] for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def test_the_inference_service_is_reconciled_into_ready_workloads(kserve, tools, release_namespace, storage_class):
    ns = release_namespace
    tools.helm("install", RELEASE, str(CHART), "-n", ns, "-f", str(CHART / "ci" / "kserve-values.yaml"),
               "--wait", "--timeout", "90s", "--set", f"modelRepo.pvc.storageClassName={storage_class}",
               "--set", f"features.data.storageClassName={storage_class}", timeout=150)
    wait_for("InferenceService Ready", lambda: _condition(_isvc(tools, ns), "Ready") == "True", timeout=120)
    isvc = _isvc(tools, ns)
    assert {c["type"] for c in isvc["status"]["conditions"] if c["status"] == "True"} >= {
        "PredictorReady", "TransformerReady", "IngressReady", "Ready"}
    assert isvc["status"]["url"]

    deployments = {d["metadata"]["name"]: d for d in tools.get(ns, "deployments")}
    for part, port in (("predictor", 8080), ("transformer", 8090)):
        made = deployments[f"{ISVC}-{part}"]
        assert made["metadata"]["ownerReferences"][0]["kind"] == "InferenceService", "KServe made it, not helm"
        assert made["status"].get("availableReplicas") == 1
        pod = made["spec"]["template"]
        assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == part  # NetworkPolicies still select it
        (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "kserve-container"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        service = json.loads(tools.kubectl("get", "service", f"{ISVC}-{part}", "-n", ns, "-o", "json").stdout)
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, port)]

    # The transformer calls the predictor through the Service KServe created for it.
    env = {e["name"]: e.get("value") for e in
           deployments[f"{ISVC}-transformer"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLYWHEEL_TRANSFORMER_PREDICTOR_URL"] == f"http://{ISVC}-predictor.{ns}.svc.cluster.local"
    hpas = {h["metadata"]["name"]: h["spec"] for h in tools.get(ns, "horizontalpodautoscalers")}
    assert (hpas[f"{ISVC}-predictor"]["minReplicas"], hpas[f"{ISVC}-predictor"]["maxReplicas"]) == (1, 4)
    # Admitted under the restricted Pod Security Standard: the pods exist and kwok made them Ready.
    pods = [p for p in tools.get(ns, "pods") if p["metadata"]["labels"].get("serving.kserve.io/inferenceservice")]
    assert len(pods) == 2 and all(_condition(p, "Ready") == "True" for p in pods)


def _rolled_out(tools, ns, name) -> bool:
    d = json.loads(tools.kubectl("get", "deployment", name, "-n", ns, "-o", "json").stdout)
    s = d.get("status", {})
    return (s.get("observedGeneration") == d["metadata"]["generation"] and s.get("updatedReplicas") == 1
            and s.get("availableReplicas") == 1 and s.get("replicas") == 1)


def test_a_repository_in_object_storage_is_copied_in_by_the_charts_own_initializer(kserve, tools, release_namespace):
    ns = release_namespace
    tools.helm("upgrade", RELEASE, str(CHART), "-n", ns, "--reuse-values", "--wait", "--timeout", "90s",
               "--set", "modelRepo.source=storageUri", "--set", "modelRepo.storageUri.uri=s3://models/model_repo",
               timeout=150)
    for part in ("predictor", "transformer"):
        wait_for(f"{part} rolled out with the initializer", lambda p=part: _rolled_out(tools, ns, f"{ISVC}-{p}"))
        pod = json.loads(tools.kubectl("get", "deployment", f"{ISVC}-{part}", "-n", ns, "-o", "json").stdout)
        spec = pod["spec"]["template"]["spec"]
        # One initializer, the chart's: KServe's pod mutator added none of its own (no STORAGE_URI).
        assert [c["name"] for c in spec.get("initContainers", [])] == ["storage-initializer"]
        assert spec["initContainers"][0]["args"] == ["s3://models/model_repo", "/mnt/models"]
        assert spec["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
        assert {v["name"]: v for v in spec["volumes"]}["model-repo"]["emptyDir"]
    wait_for("InferenceService Ready", lambda: _condition(_isvc(tools, ns), "Ready") == "True", timeout=120)


def test_kserves_own_storage_initializer_is_refused_under_restricted(kserve, tools, release_namespace):
    """Why the chart adds the initializer itself: KServe injects its own (for a STORAGE_URI) without a
    securityContext, and the restricted Pod Security Standard refuses the pod."""
    ns = release_namespace
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                  "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "bare", "annotations": {"serving.kserve.io/deploymentMode": "Standard"}},
            "spec": {"predictor": {"containers": [{
                "name": "kserve-container", "image": "flywheel/predictor:0.1.0", "securityContext": restricted,
                "env": [{"name": "STORAGE_URI", "value": "s3://models/model_repo"}]}]}}}
    tools.kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(isvc))

    def refused() -> bool:
        events = json.loads(tools.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
        return any(e["reason"] == "FailedCreate" and "bare-predictor" in e["involvedObject"]["name"]
                   and 'violates PodSecurity "restricted' in e["message"] and "storage-initializer" in e["message"]
                   for e in events)

    try:
        wait_for("KServe's injected initializer refused by Pod Security", refused, timeout=90)
    finally:
        tools.kubectl("delete", "inferenceservice", "bare", "-n", ns, "--wait=false")


def test_uninstall_removes_everything_kserve_made(kserve, tools, release_namespace):
    ns = release_namespace
    tools.helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "90s", timeout=150)

    def gone() -> bool:
        names = tools.kubectl("get", "deployments,services,horizontalpodautoscalers", "-n", ns, "-o", "name").stdout
        return ISVC not in names

    wait_for("the InferenceService's Deployments, Services and HPAs garbage-collected", gone, timeout=90)
