"""The harness leaves nothing behind: not on a clean stop, not when it is killed.

Each test runs its own control plane through the CLI (`controlplane.py up`),
next to the session's, so it can stop it in the way under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, USE_EXISTING, pid_alive, wait_for

pytestmark = pytest.mark.skipif(USE_EXISTING, reason="tests the local control plane's harness")


def _processes_under(workdir: Path) -> list[int]:
    """Pids whose working directory is inside workdir: catches grandchildren too."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd == str(workdir) or cwd.startswith(f"{workdir}/"):
                found.append(int(entry.name))
    return [p for p in found if pid_alive(p)]


def _start(workdir: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "hack/cluster/controlplane.py"), "up", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    state_file = workdir / "state.json"

    def ready():
        if proc.poll() is not None:
            pytest.fail(f"controlplane.py up exited {proc.returncode}: {proc.stderr.read()!r}")
        return state_file.exists() and json.loads(state_file.read_text())

    return proc, wait_for("controlplane.py up to report ready", ready, timeout=180)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopping_the_harness_leaves_no_component_running(tmp_path, sig):
    workdir = tmp_path / "cp"
    proc, state = _start(workdir)
    assert state["pids"].keys() == {
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    assert all(pid_alive(p) for p in state["pids"].values())

    proc.send_signal(sig)
    proc.wait(60)
    proc.stderr.close()
    # SIGKILL gives the harness no chance to clean up: the kernel's parent-death
    # signal has to take the components down.
    def alive() -> dict[str, int]:
        return {n: p for n, p in state["pids"].items() if pid_alive(p)}

    deadline = time.monotonic() + 30
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive() == {}
    assert _processes_under(workdir) == []
