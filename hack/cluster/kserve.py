"""KServe's own controller manager, run against the local control plane.

The manager binary is built from the pinned KServe module (build.sh: `kserve-manager`); its CRDs, its
`inferenceservice-config` ConfigMap and its webhook configurations come from the same module
(thirdparty.sh: `kserve/`), applied as upstream ships them. Differences from an in-cluster install, all
forced by having no pods: the manager runs as a local process with the admin kubeconfig, and the
InferenceService webhooks (defaulter, validator, pod mutator) point the API server at
https://127.0.0.1:<port> with a throwaway CA instead of at a Service. So InferenceServices are defaulted,
validated and reconciled by real KServe code into Deployments, Services and HPAs, whose pods kwok plays.

Stdlib only, like controlplane.py:

    with KServe.start(cp.kubeconfig, cp.bin_dir, thirdparty_dir, workdir) as ks:
        ...   # ks.log_tail() when something goes wrong
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import _pki
from controlplane import ControlPlaneError, die_with_parent, free_port

NAMESPACE = "kserve"  # where the manager reads inferenceservice-config (its POD_NAMESPACE)
# Only the InferenceService webhooks: the others guard kinds Flywheel does not use.
WEBHOOK_CONFIGS = ("inferenceservice.serving.kserve.io",)


@dataclass
class KServe:
    workdir: Path
    kubectl: list[str]
    proc: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, kubeconfig: Path, bin_dir: Path, manifests: Path, workdir: Path,
              timeout: float = 90.0) -> KServe:
        """Install KServe's CRDs and config, start its manager, register its webhooks; return once the
        webhooks answer."""
        workdir.mkdir(parents=True, exist_ok=True)
        kubectl = [str(bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig)]
        deadline = time.monotonic() + timeout
        _run(kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(manifests / "crds"))
        _run(kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(manifests / "crds"))
        _run(kubectl, "apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        _run(kubectl, "apply", "--server-side", "--force-conflicts",
             "-f", str(manifests / "inferenceservice-config.yaml"))

        # controller-runtime reads its serving certificate from $TMPDIR/k8s-webhook-server/serving-certs.
        pki = _pki.generate(workdir / "pki", ["127.0.0.1"])
        certs = workdir / "tmp" / "k8s-webhook-server" / "serving-certs"
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copy(pki.serving_cert, certs / "tls.crt")
        shutil.copy(pki.serving_key, certs / "tls.key")

        probe, webhook = free_port(), free_port()
        log = workdir / "kserve-manager.log"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "TMPDIR": str(workdir / "tmp"),
               "POD_NAMESPACE": NAMESPACE}
        argv = [str(bin_dir / "kserve-manager"), f"--metrics-addr=127.0.0.1:{free_port()}",
                f"--health-probe-addr=127.0.0.1:{probe}", f"--webhook-port={webhook}", "--leader-elect=false"]
        while True:
            # The manager resolves its kinds once at start; right after the CRDs are created discovery can
            # still miss them ("no matches for kind"), and it exits. Start it again until the deadline.
            with open(log, "ab") as out:
                proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=die_with_parent, cwd=workdir)
            ks = cls(workdir, kubectl, proc, log)
            if ks._wait_ready(probe, deadline):
                break
            if time.monotonic() > deadline:
                ks.stop(remove=False)
                raise ControlPlaneError(f"kserve-manager not ready in {timeout:.0f}s:\n{ks.log_tail()}")
        try:
            ks._register_webhooks(manifests / "webhooks.yaml", pki.ca_cert, webhook)
            _wait_tls(webhook, pki.ca_cert, deadline)
        except BaseException:
            ks.stop()
            raise
        return ks

    def __enter__(self) -> KServe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self, port: int, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.3)
        return False

    def _register_webhooks(self, path: Path, ca: Path, port: int) -> None:
        bundle = base64.b64encode(ca.read_bytes()).decode()
        docs = []
        for doc in _yaml_documents(self.kubectl, path):
            if doc["metadata"]["name"] not in WEBHOOK_CONFIGS:
                continue
            doc["metadata"] = {"name": doc["metadata"]["name"]}
            for hook in doc["webhooks"]:
                route = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{route}", "caBundle": bundle}
            docs.append(doc)
        _run(self.kubectl, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))

    def stop(self, remove: bool = True, grace: float = 10.0) -> None:
        """Unregister the webhooks first (with failurePolicy Fail, a gone webhook server would block every
        InferenceService and pod write), stop the manager, then delete the kserve namespace and its config.
        The CRDs stay: whoever owns the cluster decides (the test cluster is thrown away)."""
        if remove:
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                _run(self.kubectl, "delete", kind, *WEBHOOK_CONFIGS, "--ignore-not-found", check=False)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if remove:
            _run(self.kubectl, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _run(kubectl: list[str], *argv: str, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run([*kubectl, *argv], input=stdin, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise ControlPlaneError(f"kubectl {' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _yaml_documents(kubectl: list[str], path: Path) -> list[dict]:
    # kubectl turns YAML into JSON for us (one object after another), keeping this module free of a YAML
    # dependency.
    out = _run(kubectl, "create", "--dry-run=client", "-o", "json", "-f", str(path))
    decoder, docs, rest = json.JSONDecoder(), [], out.lstrip()
    while rest:
        doc, used = decoder.raw_decode(rest)
        docs.append(doc)
        rest = rest[used:].lstrip()
    return docs


def _wait_tls(port: int, ca: Path, deadline: float) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    while True:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=2, context=context):
                return
        except urllib.error.HTTPError:
            return  # the server answered (404 on /): TLS and the listener work
        except OSError as e:
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"kserve webhook server on :{port} not answering: {e}") from e
            time.sleep(0.3)
