"""Throwaway PKI for one control-plane run, made with the openssl CLI.

A fresh CA per run means no key outlives the cluster and parallel runs never
trust each other. EC P-256 keys keep generation to a fraction of a second.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# user -> (CN, O). The controller-manager and scheduler get their real
# identities so the default RBAC bindings apply; kwok plays every kubelet
# (node status, leases, pod status) and so gets cluster-admin via its group.
CLIENTS = {
    "admin": ("kubernetes-admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
    "kwok": ("kwok-controller", "system:masters"),
    # The apiserver's identity towards aggregated APIs (metrics-server and
    # the like); also gives controllers the requestheader CA they look up.
    "front-proxy-client": ("front-proxy-client", None),
}
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass
class Pki:
    dir: Path
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    ca_cert = property(lambda self: self.dir / "ca.crt")
    ca_key = property(lambda self: self.dir / "ca.key")
    serving_cert = property(lambda self: self.dir / "apiserver.crt")
    serving_key = property(lambda self: self.dir / "apiserver.key")
    sa_key = property(lambda self: self.dir / "sa.key")
    sa_pub = property(lambda self: self.dir / "sa.pub")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _leaf(pki: Pki, name: str, subj: str, exts: list[str]) -> tuple[Path, Path]:
    crt, key = pki.dir / f"{name}.crt", pki.dir / f"{name}.key"
    addext = [a for e in exts for a in ("-addext", e)]
    _openssl("req", "-x509", *_EC, "-keyout", str(key), "-out", str(crt), "-days", "30",
             "-subj", subj, "-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key),
             "-addext", "basicConstraints=critical,CA:FALSE",
             "-addext", "keyUsage=critical,digitalSignature", *addext)
    return crt, key


def generate(directory: Path, hosts: list[str]) -> Pki:
    """Create CA, apiserver serving cert, client certs and the SA signing key."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pki = Pki(directory)
    _openssl("req", "-x509", *_EC, "-keyout", str(pki.ca_key), "-out", str(pki.ca_cert),
             "-days", "30", "-subj", "/CN=flywheel-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local", *hosts]
    san = ",".join(("IP:" if h[0].isdigit() else "DNS:") + h for h in names)
    _leaf(pki, "apiserver", "/CN=kube-apiserver",
          [f"subjectAltName={san}", "extendedKeyUsage=serverAuth"])
    for user, (cn, org) in CLIENTS.items():
        subj = f"/CN={cn}" + (f"/O={org}" if org else "")
        pki.clients[user] = _leaf(pki, f"client-{user}", subj, ["extendedKeyUsage=clientAuth"])
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-out", str(pki.sa_key))
    _openssl("pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    return pki


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path) -> None:
    """A self-contained kubeconfig (data inlined), usable from any directory."""
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    # JSON is valid YAML, and keeps this module free of a YAML dependency.
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "flywheel-local",
        "clusters": [{"name": "flywheel-local", "cluster": {
            "server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": "flywheel-local", "user": {
            "client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "flywheel-local", "context": {
            "cluster": "flywheel-local", "user": "flywheel-local"}}],
    }, indent=2))
    path.chmod(0o600)


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
