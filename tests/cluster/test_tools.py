"""kubectl and helm built by hack/cluster/build.sh work against the cluster."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from chart_fixtures import tool


def _run(cluster, *argv: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": str(cwd or "."),
           "HELM_CONFIG_HOME": str(cwd or "."), "HELM_DATA_HOME": str(cwd or ".")}
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_kubectl_sees_ready_nodes(cluster):
    out = _run(cluster, tool(cluster, "kubectl"), "get", "nodes", "--no-headers")
    assert out.strip() and all(" Ready " in f" {line} " for line in out.strip().splitlines())


def test_helm_install_waits_for_a_chart_to_become_ready(cluster, namespace, tmp_path):
    helm = tool(cluster, "helm")
    _run(cluster, helm, "create", "demo", cwd=tmp_path)
    _run(cluster, helm, "install", "demo", str(tmp_path / "demo"), "--namespace", namespace,
         "--wait", "--timeout", "120s", cwd=tmp_path)
    status = _run(cluster, helm, "status", "demo", "--namespace", namespace, cwd=tmp_path)
    assert "STATUS: deployed" in status


def _pinned(name: str) -> str:
    versions = Path(__file__).resolve().parents[2] / "hack" / "cluster" / "versions.env"
    return next(line.split("=", 1)[1].strip() for line in versions.read_text().splitlines()
                if line.startswith(f"{name}="))


def test_helm_is_built_as_helm_releases_are(cluster, tmp_path):
    # Helm's Makefile stamps its version and the Kubernetes minor of its client-go; without them `helm version`
    # is empty and offline `helm template` assumes Kubernetes v1.20, below the chart's kubeVersion.
    helm = tool(cluster, "helm")
    version = _run(cluster, helm, "version", "--template", "{{.Version}} {{.GitTreeState}}", cwd=tmp_path).split()
    assert version == [_pinned("HELM_VERSION"), "clean"]
    chart = Path(__file__).resolve().parents[2] / "charts" / "flywheel"
    rendered = _run(cluster, helm, "template", "flywheel", str(chart), cwd=tmp_path)  # no --kube-version
    assert "kind: Deployment" in rendered
