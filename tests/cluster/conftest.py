"""One Kubernetes control plane per test session.

By default the local one from hack/cluster (built on first use, then cached,
torn down at the end). With FLYWHEEL_TEST_EXISTING_CLUSTER=1 and KUBECONFIG
set, the same tests run against that cluster instead and nothing is started.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack" / "cluster"))
import controlplane  # noqa: E402

USE_EXISTING = os.environ.get("FLYWHEEL_TEST_EXISTING_CLUSTER") == "1"
# The chart fixtures (tools, release_namespace, storage_class, third_party_crds) for every test module, so a
# module names them as parameters without importing them (an import shadowed by the parameter).
pytest_plugins = ["chart_fixtures"]


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    control_plane: controlplane.ControlPlane | None  # None on an existing cluster


def pid_alive(pid: int) -> bool:
    """True while the pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if USE_EXISTING:
        kubeconfig = os.environ.get("KUBECONFIG", "")
        if not kubeconfig:
            pytest.fail("FLYWHEEL_TEST_EXISTING_CLUSTER=1 needs KUBECONFIG to name the cluster")
        yield Cluster(Path(kubeconfig.split(os.pathsep)[0]), None)
        return
    cp = controlplane.ControlPlane.start()
    pids = cp.pids
    try:
        yield Cluster(cp.kubeconfig, cp)
    finally:
        cp.stop()
    stray = {name: pid for name, pid in pids.items() if pid_alive(pid)}
    assert not stray, f"control plane processes left running after teardown: {stray}"


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0) -> object:
    """Poll check() until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def _make_namespace(api: client.ApiClient, labels: dict[str, str]) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))

    def default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    # Pods are refused until the controller-manager has made this account.
    wait_for(f"ServiceAccount {name}/default", default_sa)
    yield name
    core.delete_namespace(name)


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, deleted afterwards."""
    yield from _make_namespace(api, {})


@pytest.fixture
def restricted_namespace(api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace that enforces the restricted Pod Security Standard."""
    yield from _make_namespace(api, {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    })
