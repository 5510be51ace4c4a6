"""A real Kubernetes control plane on loopback, with kwok standing in for kubelets.

Why: the project's charts, operators and jobs need an API server that behaves
like a real one (RBAC, admission, PodSecurity, controllers, scheduler) in tests,
on machines that have no container engine. etcd, kube-apiserver,
kube-controller-manager and kube-scheduler are the upstream binaries built by
build.sh; kwok (also upstream) makes fake nodes Ready and moves pods through
their lifecycle, so Deployments become Available, Jobs complete and Services
get EndpointSlices, without running a single container.

Stdlib only, so pytest harnesses and scripts of any project can import it:

    from controlplane import ControlPlane
    with ControlPlane.start() as cp:      # builds on first use, then cached
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)

or from a shell (see README.md): ``python3 hack/cluster/controlplane.py up``.

Every process runs in its own process group and dies with its parent
(PR_SET_PDEATHSIG), so neither stop() nor a killed pytest leaves strays.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import runpy
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _pki  # noqa: E402  (sibling module; this file is also run as a script)

FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# Pod IPs that kwok hands out are data only: no kube-proxy or CNI exists, so
# nothing ever routes to them.
POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or made ready."""


@dataclass(frozen=True)
class NodeSpec:
    """A fake node. Allocatable is what the scheduler sees; nothing is reserved."""

    name: str
    cpu: str = "16"
    memory: str = "64Gi"
    pods: str = "110"
    gpus: int = 0  # advertised as nvidia.com/gpu; such nodes get the usual GPU taint

    def manifest(self) -> dict:
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
        }
        taints = []
        if self.gpus:
            resources["nvidia.com/gpu"] = str(self.gpus)
            labels["nvidia.com/gpu.present"] = "true"
            taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1]},
            },
            "spec": {"taints": taints},
            "status": {"allocatable": resources, "capacity": resources},
        }


DEFAULT_NODES = (NodeSpec("kwok-node-0"), NodeSpec("kwok-gpu-node-0", gpus=4))


def build(env: dict[str, str] | None = None) -> Path:
    """Run build.sh (a no-op when cached) and return the directory of binaries."""
    proc = subprocess.run(
        [str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"hack/cluster/build.sh failed with exit code {proc.returncode}")
    return Path(proc.stdout.strip().splitlines()[-1])


# A port outside the kernel's ephemeral range, so no outgoing connection takes it before the component binds it
# (flywheel_contracts.ports, standard library only, run by path).
free_port: Callable[[], int] = runpy.run_path(
    str(Path(__file__).resolve().parents[2] / "libs/flywheel-contracts/src/flywheel_contracts/ports.py"))["free_port"]


def die_with_parent() -> None:
    # Runs in the child between fork and exec: if the harness dies (even by
    # SIGKILL) the kernel kills each component instead of orphaning it.
    # SIGKILL, not SIGTERM: an apiserver whose etcd died with the same parent
    # can sit in graceful shutdown indefinitely, and the data is throwaway.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class ControlPlane:
    """A running control plane; use ControlPlane.start() or the CLI."""

    workdir: Path
    bin_dir: Path
    keep_workdir: bool = False
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    def start(
        cls,
        nodes: tuple[NodeSpec, ...] = DEFAULT_NODES,
        workdir: Path | None = None,
        timeout: float = 120.0,
        keep_workdir: bool | None = None,
    ) -> ControlPlane:
        """Build if needed, start every component, and return once usable.

        Usable means: apiserver /readyz ok, controller-manager and scheduler
        healthy, every node Ready, and the default ServiceAccount exists (so
        pods can be created at once).
        """
        bin_dir = build()
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="flywheel-k8s-"))
        if keep_workdir is None:
            keep_workdir = os.environ.get("FLYWHEEL_K8S_KEEP_WORKDIR") == "1"
        cp = cls(workdir=workdir, bin_dir=bin_dir, keep_workdir=keep_workdir)
        try:
            cp._start(nodes, time.monotonic() + timeout)
        except BaseException:
            cp.stop()
            raise
        return cp

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, grace: float = 10.0) -> None:
        """Stop components in reverse start order; SIGKILL what outlives grace."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            # A component's own children (none today) die with its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if not self.keep_workdir:
            subprocess.run(["rm", "-rf", str(self.workdir)], check=False)

    # -- start-up ----------------------------------------------------------

    def _start(self, nodes: tuple[NodeSpec, ...], deadline: float) -> None:
        w = self.workdir
        (w / "logs").mkdir(parents=True, exist_ok=True)
        for name in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler"):
            self.ports[name] = free_port()
        pki = _pki.generate(w / "pki", hosts=["127.0.0.1", "localhost", "10.96.0.1"])
        for user, (cert, key) in pki.clients.items():
            _pki.write_kubeconfig(w / f"{user}.kubeconfig", self.server, pki.ca_cert, cert, key)

        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd_peer']}"
        self._spawn("etcd", [
            "--name=default", f"--data-dir={w / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Throwaway test data: durability buys nothing and fsync is slow.
            "--unsafe-no-fsync", "--quota-backend-bytes=2147483648", "--log-level=warn",
        ])
        self._wait("etcd /health", deadline, lambda: b'"true"' in _get(etcd_url + "/health"))

        self._spawn("kube-apiserver", [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}", f"--cert-dir={w / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            # The advertise address is loopback, which an Endpoints object may
            # not hold; the 'kubernetes' Service is not used by anything here.
            "--endpoint-reconciler-type=none",
            f"--requestheader-client-ca-file={pki.ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.clients['front-proxy-client'][0]}",
            f"--proxy-client-key-file={pki.clients['front-proxy-client'][1]}",
            "--profiling=false",
        ])
        admin = _pki.client_context(pki.ca_cert, *pki.clients["admin"])
        self._wait("kube-apiserver /readyz", deadline,
                   lambda: _get(self.server + "/readyz", admin) == b"ok")

        for comp, port_name, extra in (
            ("kube-controller-manager", "controller_manager", [
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                "--use-service-account-credentials=true",
                "--controllers=*,bootstrapsigner,tokencleaner",
            ]),
            ("kube-scheduler", "scheduler", []),
        ):
            kc = w / f"{comp}.kubeconfig"
            self._spawn(comp, [
                f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", f"--secure-port={self.ports[port_name]}",
                f"--cert-dir={w / comp}", "--leader-elect=false", *extra,
            ])
        self._spawn("kwok", [
            f"--kubeconfig={w / 'kwok.kubeconfig'}",
            f"--config={self.bin_dir.parent / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=" + "=".join(FAKE_NODE_ANNOTATION),
            # Loopback, so a stray apiserver->"kubelet" call stays on this host.
            "--node-ip=127.0.0.1", f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40",
        ])

        for node in nodes:
            _request(self.server + "/api/v1/nodes", admin, "POST", node.manifest())
        insecure = ssl._create_unverified_context()  # self-signed health endpoints
        for comp, port_name in (("kube-controller-manager", "controller_manager"),
                                ("kube-scheduler", "scheduler")):
            url = f"https://127.0.0.1:{self.ports[port_name]}/healthz"
            self._wait(f"{comp} /healthz", deadline, lambda u=url: _get(u, insecure) == b"ok")
        for node in nodes:
            self._wait(f"node {node.name} Ready", deadline,
                       lambda n=node.name: _node_ready(self.server, admin, n))
        self._wait("ServiceAccount default/default", deadline, lambda: _exists(
            self.server + "/api/v1/namespaces/default/serviceaccounts/default", admin))

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / "logs" / f"{name}.log", "wb")  # noqa: SIM115
        with log:
            self.procs[name] = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent, cwd=self.workdir,
            )

    def _wait(self, what: str, deadline: float, ready) -> None:
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ControlPlaneError(
                        f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                        + self.log_tail(name))
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"timed out waiting for {what}; logs in {self.workdir}/logs")
            time.sleep(0.25)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# -- tiny HTTP helpers (stdlib, so the harness needs no kubernetes client) --

def _get(url: str, ctx: ssl.SSLContext | None = None) -> bytes:
    with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
        return resp.read().strip()


def _request(url: str, ctx: ssl.SSLContext, method: str, body: dict) -> dict:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        return json.load(resp)


def _exists(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        _get(url, ctx)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise
    return True


def _node_ready(server: str, ctx: ssl.SSLContext, name: str) -> bool:
    node = json.loads(_get(f"{server}/api/v1/nodes/{name}", ctx))
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in node.get("status", {}).get("conditions", []))


# -- CLI -------------------------------------------------------------------

def _cmd_up(args: argparse.Namespace) -> int:
    workdir = Path(args.dir).resolve() if args.dir else None
    if workdir is not None:
        state = workdir / "state.json"
        if state.exists():
            pid = json.loads(state.read_text())["supervisor_pid"]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 0)
                raise ControlPlaneError(f"a control plane (pid {pid}) already runs in {workdir}")
        # A kept dir from an earlier run holds etcd data signed by an old CA.
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
        workdir.mkdir(parents=True)
    stop = {"now": False}

    def _on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    t0 = time.monotonic()
    cp = ControlPlane.start(workdir=workdir, keep_workdir=args.dir is not None)
    try:
        state = {"kubeconfig": str(cp.kubeconfig), "server": cp.server,
                 "supervisor_pid": os.getpid(), "pids": cp.pids,
                 "ready_seconds": round(time.monotonic() - t0, 1)}
        (cp.workdir / "state.json").write_text(json.dumps(state, indent=2))
        print(f"control plane ready in {state['ready_seconds']}s", flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        while not stop["now"]:
            dead = [n for n, p in cp.procs.items() if p.poll() is not None]
            if dead:
                print(f"component(s) exited: {dead}; stopping", file=sys.stderr)
                return 1
            time.sleep(1)
        return 0
    finally:
        cp.stop()
        (cp.workdir / "state.json").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build missing binaries, print their directory")
    up = sub.add_parser("up", help="start and stay in the foreground until SIGINT/SIGTERM")
    up.add_argument("--dir", help="work dir to use and keep (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            print(build())
            return 0
        return _cmd_up(args)
    except ControlPlaneError as e:
        print(f"controlplane: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
