"""Helpers and fixtures for the charts/flywheel tests: helm/kubectl runners and a module-scoped namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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


# Custom resources the chart can render whose operators the local cluster does not run: the dry-run
# tests install schemaless stand-ins for their CRDs, so everything around them is still checked by the server.
STUB_CRDS = {  # (group, version, kind, plural)
    "inferenceservices.serving.kserve.io": ("serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices"),
    "servicemonitors.monitoring.coreos.com": ("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"),
    "prometheusrules.monitoring.coreos.com": ("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules"),
}
STUB_API_VERSIONS = [f"{g}/{v}/{k}" for g, v, k, _ in STUB_CRDS.values()]


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

    def render(self, *values_files: Path, namespace: str = "default", extra: tuple[str, ...] = ()) -> list[dict]:
        argv = ["template", "flywheel", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                *(f"--api-versions={v}" for v in STUB_API_VERSIONS)]
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


@pytest.fixture(scope="module")
def tools(cluster, tmp_path_factory) -> Tools:
    home = tmp_path_factory.mktemp("helm")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    return Tools(tool(cluster, "helm"), tool(cluster, "kubectl"), env)


@pytest.fixture(scope="module")
def release_namespace(api) -> Iterator[str]:
    """One restricted namespace shared by the install / upgrade / rollback / uninstall steps."""
    yield from _make_namespace(api, RESTRICTED)


@pytest.fixture(scope="module")
def stub_crds(api) -> Iterator[None]:
    """Schemaless CRDs for InferenceService, ServiceMonitor and PrometheusRule, removed afterwards."""
    ext = client.ApiextensionsV1Api(api)
    created = []
    for name, (group, version, kind, plural) in STUB_CRDS.items():
        try:
            ext.read_custom_resource_definition(name)
            continue  # a real one (an existing cluster): leave it alone
        except ApiException as e:
            if e.status != 404:
                raise
        ext.create_custom_resource_definition(client.V1CustomResourceDefinition(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1CustomResourceDefinitionSpec(
                group=group, scope="Namespaced",
                names=client.V1CustomResourceDefinitionNames(kind=kind, plural=plural),
                versions=[client.V1CustomResourceDefinitionVersion(
                    name=version, served=True, storage=True,
                    schema=client.V1CustomResourceValidation(open_apiv3_schema=client.V1JSONSchemaProps(
                        type="object", x_kubernetes_preserve_unknown_fields=True)))],
            )))
        created.append(name)

    def established() -> bool:
        return all(any(c.type == "Established" and c.status == "True"
                       for c in (ext.read_custom_resource_definition(n).status.conditions or []))
                   for n in created)

    wait_for("stub CRDs Established", established)
    yield
    for name in created:
        ext.delete_custom_resource_definition(name)
