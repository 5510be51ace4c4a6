"""hack/cluster/build.sh's output: one line per binary with its time; the Go toolchain's chatter in a log file.

A stand-in `go` on PATH plays a cold build (it prints `go: downloading ...` as the real one does) into an
empty cache, so this needs neither the control plane nor 20 minutes.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "hack" / "cluster" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm",
            "skaffold", "dockerfile-lint", "kserve-manager")

FAKE_GO = """#!/usr/bin/env bash
set -eu
case "$1" in
  env) echo go1.26.8 ;;
  list) echo "$FAKE_KWOK_MODULE" ;;
  build)
    if [[ -n "${FAKE_GO_FAIL:-}" ]]; then echo "main.go:1: undefined: nope" >&2; exit 1; fi
    for i in 1 2 3; do echo "go: downloading example.com/module$i v1.0.$i" >&2; done
    while [[ "$1" != "-o" ]]; do shift; done
    printf '#!/bin/sh\\n' > "$2" && chmod +x "$2" ;;
  *) echo "fake go: unexpected $*" >&2; exit 2 ;;
esac
"""


def _run(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IXUSR)
    kwok = tmp_path / "kwok-module"
    for stage in ("node/fast/node-initialize", "node/heartbeat-with-lease/node-heartbeat-with-lease",
                  "pod/fast/pod-ready", "pod/fast/pod-complete", "pod/fast/pod-delete"):
        path = kwok / "kustomize" / "stage" / f"{stage}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("kind: Stage\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FLYWHEEL_K8S_CACHE": str(tmp_path / "cache"), "FAKE_KWOK_MODULE": str(kwok), **extra}
    return subprocess.run([str(BUILD)], env=env, capture_output=True, text=True, timeout=120)


def test_a_cold_build_prints_one_line_per_binary_with_its_time_and_logs_go_output(tmp_path):
    run = _run(tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("/bin")  # the bin dir, for controlplane.py
    assert "go: downloading" not in run.stderr
    built = [line for line in run.stderr.splitlines() if re.search(r" \.\.\. built in \d+s$", line)]
    assert [line.split()[1] for line in built] == list(BINARIES)
    assert len(run.stderr.splitlines()) == len(BINARIES) + 2  # and the two lines saying where Go's output goes
    log = (tmp_path / "cache" / "build.log").read_text()
    assert log.count("go: downloading") == 3 * len(BINARIES)

    again = _run(tmp_path)  # warm: builds nothing, says nothing
    assert again.returncode == 0 and again.stderr == ""


def test_a_failed_build_shows_the_end_of_go_output(tmp_path):
    run = _run(tmp_path, FAKE_GO_FAIL="1")
    assert run.returncode == 1
    assert "etcd (etcd" in run.stderr and "FAILED after" in run.stderr
    assert "undefined: nope" in run.stderr
