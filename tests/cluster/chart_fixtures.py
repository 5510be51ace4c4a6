"""Helpers and fixtures for the charts/flywheel tests: helm/kubectl runners and a module-scoped namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import REPO, _make_namespace, wait_for

CHART = REPO / "charts" / "flywheel"
KUBE_VERSION = "1.36.1"  # hack/cluster/versions.env; `helm template` needs it for the chart's kubeVersion
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


# Custom resources the chart can render whose operators the local cluster does not run. Their real CRDs
# (KServe's, the Prometheus Operator's, at the versions hack/cluster/versions.env pins) are installed for the
# dry-run tests, so the API server checks the chart's InferenceService, ServiceMonitor and PrometheusRule
# against the upstream schemas.
THIRD_PARTY_KINDS = {  # CRD name: apiVersion/kind as `helm template --api-versions` takes it
    "inferenceservices.serving.kserve.io": "serving.kserve.io/v1beta1/InferenceService",
    "servicemonitors.monitoring.coreos.com": "monitoring.coreos.com/v1/ServiceMonitor",
    "prometheusrules.monitoring.coreos.com": "monitoring.coreos.com/v1/PrometheusRule",
}
THIRD_PARTY_API_VERSIONS = list(THIRD_PARTY_KINDS.values())
MODELROLLOUT_CRD = REPO / "manifests" / "crds" / "flywheel.dev_modelrollouts.yaml"


def third_party_dir() -> Path:
    """hack/cluster/thirdparty.sh's directory of upstream CRDs and KServe's manifests (fetched once, then
    cached)."""
    done = subprocess.run([str(REPO / "hack" / "cluster" / "thirdparty.sh")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"hack/cluster/thirdparty.sh failed:\n{done.stderr}"
    return Path(done.stdout.split()[-1])


def pod_spec(doc: dict) -> dict:
    """The pod spec of a rendered workload (Deployment, StatefulSet, Job, CronJob); {} for other kinds."""
    spec = doc.get("spec", {})
    spec = spec.get("jobTemplate", {}).get("spec", spec)
    return spec.get("template", {}).get("spec", {})


def scenario_files() -> list[Path]:
    return sorted((CHART / "ci").glob("*-values.yaml"))


@dataclass(frozen=True)
class Tools:
    """helm and kubectl against the test cluster, with helm's state in a private directory."""

    helm_bin: str
    kubectl_bin: str
    env: dict[str, str]

    def run(self, *argv: str, ok: bool = True, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(argv, env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout)
        if ok:
            assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done

    def helm(self, *argv: str, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run(self.helm_bin, *argv, ok=ok, timeout=timeout)

    def kubectl(self, *argv: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        return self.run(self.kubectl_bin, *argv, ok=ok, stdin=stdin)

    def get(self, namespace: str, kind: str) -> list[dict]:
        out = self.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
        return json.loads(out)["items"]

    def render(self, *values_files: Path, namespace: str = "default", extra: tuple[str, ...] = (),
               crds: bool = False) -> list[dict]:
        argv = ["template", "flywheel", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                *(["--include-crds"] if crds else []),
                *(f"--api-versions={v}" for v in THIRD_PARTY_API_VERSIONS)]
        for f in values_files:
            argv += ["-f", str(f)]
        out = self.helm(*argv, *extra).stdout
        return [d for d in yaml.safe_load_all(out) if d]


def tool(cluster, name: str) -> str:
    """The built binary of the local control plane, else the one on PATH (skip when there is none)."""
    if cluster.control_plane is not None:
        return str(cluster.control_plane.bin_dir / name)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not on PATH")
    return found


@pytest.fixture(scope="session")
def tools(cluster, tmp_path_factory) -> Tools:
    home = tmp_path_factory.mktemp("helm")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    return Tools(tool(cluster, "helm"), tool(cluster, "kubectl"), env)


@pytest.fixture(scope="module")
def release_namespace(api) -> Iterator[str]:
    """One restricted namespace shared by the install / upgrade / rollback / uninstall steps."""
    yield from _make_namespace(api, RESTRICTED)


def crd_established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    conditions = ext.read_custom_resource_definition(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="session")
def third_party_crds(api, tools) -> Iterator[None]:
    """KServe's and the Prometheus Operator's CRDs on the cluster for the whole session (installing and
    removing them per module raced: a CRD still terminating looked present); those this fixture added are
    removed at the end (on an existing cluster that already serves them, they are left alone)."""
    ext = client.ApiextensionsV1Api(api)
    created = []
    for name in THIRD_PARTY_KINDS:
        try:
            ext.read_custom_resource_definition(name)
            continue
        except ApiException as e:
            if e.status != 404:
                raise
        created.append(name)
    crds = third_party_dir() / "crds"
    for name in created:
        plural, group = name.split(".", 1)
        # Server-side apply: KServe's CRD is too large for the last-applied annotation of a client-side apply.
        tools.kubectl("apply", "--server-side", "-f", str(crds / f"{group}_{plural}.yaml"))
    wait_for("third-party CRDs Established", lambda: all(crd_established(ext, n) for n in created))
    yield
    for name in created:
        ext.delete_custom_resource_definition(name)


@pytest.fixture(scope="module")
def storage_class(api) -> str:
    """Two static PersistentVolumes the chart's claims bind to: the local cluster has no provisioner."""
    core = client.CoreV1Api(api)
    name = f"flywheel-test-{uuid.uuid4().hex[:6]}"
    pvs = [f"{name}-{i}" for i in range(2)]
    for pv in pvs:
        core.create_persistent_volume(client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=pv),
            spec=client.V1PersistentVolumeSpec(
                storage_class_name=name, capacity={"storage": "2Gi"}, access_modes=["ReadWriteOnce"],
                persistent_volume_reclaim_policy="Retain", host_path=client.V1HostPathVolumeSource(
                    path=f"/tmp/{pv}")),
        ))
    yield name
    for pv in pvs:
        core.delete_persistent_volume(pv)
