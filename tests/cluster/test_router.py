"""The router component of charts/flywheel on a real API server: it installs under the restricted Pod Security
Standard, its RBAC reaches its routes ConfigMap and nothing else, its configmap route source works as the
router's own ServiceAccount (generations, conflicts, changes seen within a second), and helm upgrade and
rollback never revert or delete the routes it wrote. kwok plays the pods, so the router process itself runs
here, outside the cluster, against the same API server (route_source_probe.py)."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from chart_fixtures import CHART
from conftest import REPO

RELEASE = "rt"
PREFIX = f"{RELEASE}-flywheel"
ROUTER = f"{PREFIX}-router"
ROUTES = f"{PREFIX}-routes"
TOKEN_SECRET = f"{PREFIX}-router-token"
ROUTER_PYTHON = REPO / "services" / "router" / ".venv" / "bin" / "python"
PROBE = REPO / "tests" / "cluster" / "route_source_probe.py"


def _json(tools, *argv: str) -> dict:
    return json.loads(tools.kubectl(*argv, "-o", "json").stdout)


def _routes_data(tools, ns: str) -> dict[str, str]:
    return _json(tools, "get", "configmap", ROUTES, "-n", ns).get("data") or {}


def _token(tools, ns: str) -> str:
    return base64.b64decode(_json(tools, "get", "secret", TOKEN_SECRET, "-n", ns)["data"]["token"]).decode()


def _install_flags(storage_class: str) -> tuple[str, ...]:
    return ("--wait", "--timeout", "90s", "--set", f"modelRepo.pvc.storageClassName={storage_class}",
            "--set", f"features.data.storageClassName={storage_class}")


# --- one release, in file order: install, RBAC, the route source, upgrade + rollback, uninstall ---------------


def test_the_router_installs_under_restricted_and_becomes_available(tools, release_namespace, storage_class):
    ns = release_namespace
    tools.helm("install", RELEASE, str(CHART), "-n", ns, *_install_flags(storage_class),
               "--set", "router.routes.fraud=v1", timeout=150)
    router = _json(tools, "get", "deployment", ROUTER, "-n", ns)
    assert router["status"].get("availableReplicas") == 2, router["status"]
    pod = router["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == ROUTER and pod["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", 8000), ("admin", 8001)]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLYWHEEL_ROUTER_DEFAULT_UPSTREAM"] == f"http://{PREFIX}-transformer:8090"
    assert (env["FLYWHEEL_ROUTER_ROUTE_SOURCE"], env["FLYWHEEL_ROUTER_KUBE_CONFIGMAP"]) == ("configmap", ROUTES)
    assert env["FLYWHEEL_ROUTER_TOKEN_FILE"] == "/var/run/flywheel/router-token/token"
    assert {v["name"]: v for v in pod["volumes"]}["router-token"]["secret"]["secretName"] == TOKEN_SECRET
    # Only the router and the controller ask for an API token.
    others = [d for d in tools.get(ns, "deployments") if d["metadata"]["name"] not in (ROUTER, f"{PREFIX}-controller")]
    assert others and all(d["spec"]["template"]["spec"]["automountServiceAccountToken"] is False for d in others)
    service = _json(tools, "get", "service", ROUTER, "-n", ns)
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 8000), ("admin", 8001)]
    assert _json(tools, "get", "pdb", ROUTER, "-n", ns)["spec"]["minAvailable"] == 1
    assert len(_token(tools, ns)) == 48
    assert _routes_data(tools, ns) == {"fraud.stable": "v1"}


def _can(tools, ns: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    done = tools.kubectl("auth", "can-i", verb, resource, "-n", namespace or ns,
                         "--as", f"system:serviceaccount:{ns}:{ROUTER}", ok=False)
    return done.stdout.strip() == "yes"


def test_the_routers_rbac_reaches_its_routes_configmap_and_nothing_else(tools, release_namespace):
    ns = release_namespace
    for verb in ("get", "list", "watch", "update", "patch"):
        assert _can(tools, ns, verb, f"configmaps/{ROUTES}"), verb
    assert not _can(tools, ns, "get", "configmaps/kube-root-ca.crt"), "another ConfigMap"
    assert not _can(tools, ns, "list", "configmaps"), "every ConfigMap (no name)"
    assert not _can(tools, ns, "create", "configmaps") and not _can(tools, ns, "delete", f"configmaps/{ROUTES}")
    assert not _can(tools, ns, "get", "secrets") and not _can(tools, ns, "get", f"secrets/{TOKEN_SECRET}")
    assert not _can(tools, ns, "get", "deployments.apps") and not _can(tools, ns, "patch", f"deployments.apps/{ROUTER}")
    assert not _can(tools, ns, "get", f"configmaps/{ROUTES}", namespace="default"), "another namespace"


@pytest.fixture(scope="module")
def router_credentials(cluster, tools, release_namespace, tmp_path_factory) -> dict:
    """The API server's URL and CA from the kubeconfig, and a token of the router's ServiceAccount."""
    if not ROUTER_PYTHON.exists():
        pytest.fail(f"{ROUTER_PYTHON} is missing: cd services/router && uv sync")
    directory = tmp_path_factory.mktemp("router-sa")
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    current = next(c["context"] for c in kubeconfig["contexts"] if c["name"] == kubeconfig["current-context"])
    server = next(c["cluster"] for c in kubeconfig["clusters"] if c["name"] == current["cluster"])
    ca_file = directory / "ca.crt"
    if "certificate-authority-data" in server:
        ca_file.write_bytes(base64.b64decode(server["certificate-authority-data"]))
    else:
        ca_file.write_bytes((cluster.kubeconfig.parent / server["certificate-authority"]).read_bytes())
    token_file = directory / "token"
    token_file.write_text(tools.kubectl("create", "token", ROUTER, "-n", release_namespace).stdout.strip())
    return {"api_url": server["server"], "ca_file": str(ca_file), "token_file": str(token_file)}


def test_the_route_source_follows_and_writes_the_configmap_as_the_routers_serviceaccount(
        tools, release_namespace, router_credentials):
    ns = release_namespace
    args = {**router_credentials, "namespace": ns, "configmap": ROUTES, "kubectl": tools.kubectl_bin}
    done = tools.run(str(ROUTER_PYTHON), str(PROBE), json.dumps(args), timeout=60)
    seen = json.loads(done.stdout.splitlines()[-1])
    # The chart's router.routes is each model's route until one is written.
    assert seen["first"] == {"fraud": {"schemaVersion": 1, "model": "fraud", "generation": 0,
                                       "stable": {"version": "v1"}, "candidateWeight": 0.0, "shadowPercent": 0.0}}
    assert seen["put"]["generation"] == 1 and seen["put"]["updatedAt"]
    assert seen["stale_put"] == ("Conflict: route 'fraud' is at generation 1, the write was based on 0: "
                                 "read it again and re-apply the change")
    assert seen["last"]["chargeback"]["stable"] == {"version": "v7"}
    assert "lacks the RBAC verb 'get' on configmaps 'not-the-routes'" in seen["other_configmap"]
    # Both changes came on the one watch opened after the first list: pushed by the API server, not found by
    # polling (the README's "within a second" rests on that; how soon is a bench figure, not a test).
    assert seen["follower_requests"] == ["list", "watch"], seen
    assert seen["follower_ended"] == "cancelled", "run() raised instead of retrying"
    data = _routes_data(tools, ns)
    assert json.loads(data["fraud.json"]) == seen["put"]
    assert set(data) == {"fraud.stable", "fraud.json", "chargeback.json"}


def test_helm_upgrade_and_rollback_keep_the_routes_the_router_wrote(tools, release_namespace, storage_class):
    ns = release_namespace
    tools.kubectl("patch", "configmap", ROUTES, "-n", ns, "--type", "merge",
                  "-p", json.dumps({"data": {"by-hand.json": "{}"}}))
    written = {k: v for k, v in _routes_data(tools, ns).items() if k.endswith(".json")}
    assert set(written) == {"fraud.json", "chargeback.json", "by-hand.json"}
    token = _token(tools, ns)

    # The chart's own keys follow the values; the written ones stay as they are.
    tools.helm("upgrade", RELEASE, str(CHART), "-n", ns, "--reuse-values", "--wait", "--timeout", "90s",
               "--set", "router.routes.fraud=v2", "--set", "router.routes.x=v1", timeout=150)
    assert _routes_data(tools, ns) == {**written, "fraud.stable": "v2", "x.stable": "v1"}
    # Back to no router.routes at all: the chart's keys go, the written ones stay.
    tools.helm("upgrade", RELEASE, str(CHART), "-n", ns, "--reset-values", *_install_flags(storage_class),
               timeout=150)
    assert _routes_data(tools, ns) == written
    tools.helm("rollback", RELEASE, "1", "-n", ns, "--wait", "--timeout", "90s", timeout=150)
    assert _routes_data(tools, ns) == {**written, "fraud.stable": "v1"}
    assert _token(tools, ns) == token, "the admin token survives upgrades and rollbacks"


def test_uninstall_removes_the_routes_and_the_token(tools, release_namespace):
    ns = release_namespace
    tools.helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "90s", timeout=150)
    left = tools.kubectl("get", f"configmap/{ROUTES}", f"secret/{TOKEN_SECRET}", f"role/{ROUTER}",
                         f"serviceaccount/{ROUTER}", "-n", ns, "--ignore-not-found", "-o", "name").stdout
    assert left.strip() == ""


# --- rendering only --------------------------------------------------------------------------------------------


def _by_kind_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_an_existing_token_secret_replaces_the_generated_one_for_router_and_controller(tools):
    docs = _by_kind_name(tools.render(extra=("--set", "router.auth.existingSecret=my-token",
                                             "--set", "controller.enabled=true")))
    assert ("Secret", "flywheel-router-token") not in docs and ("Secret", "my-token") not in docs
    for component in ("router", "controller"):
        pod = docs[("Deployment", f"flywheel-{component}")]["spec"]["template"]["spec"]
        assert {v["name"]: v for v in pod["volumes"]}["router-token"]["secret"]["secretName"] == "my-token"
    env = {e["name"]: e.get("value") for e in
           docs[("Deployment", "flywheel-controller")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL"] == "http://flywheel-router:8001"
    assert env["FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE"] == "/var/run/flywheel/router-token/token"


def test_network_policies_put_the_router_in_front_of_the_transformer(tools):
    docs = _by_kind_name(tools.render(CHART / "ci" / "full-values.yaml"))
    router = docs[("NetworkPolicy", "flywheel-router")]["spec"]["ingress"]
    by_port = {rule["ports"][0]["port"]: rule.get("from") for rule in router[:2]}
    assert by_port[8000] == [{"namespaceSelector": {"matchLabels": {"flywheel.dev/clients": "true"}}}]
    (admin,) = by_port[8001]
    assert admin["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"
    (transformer, _metrics) = docs[("NetworkPolicy", "flywheel-transformer")]["spec"]["ingress"]
    (only,) = transformer["from"]
    assert only["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "router"
    assert ("HorizontalPodAutoscaler", "flywheel-router") in docs
    assert "replicas" not in docs[("Deployment", "flywheel-router")]["spec"]


def test_kserve_mode_routes_to_the_transformer_service_kserve_creates(tools):
    docs = _by_kind_name(tools.render(CHART / "ci" / "kserve-values.yaml", namespace="ml"))
    env = {e["name"]: e.get("value") for e in
           docs[("Deployment", "flywheel-router")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLYWHEEL_ROUTER_DEFAULT_UPSTREAM"] == "http://flywheel-transformer.ml.svc.cluster.local"


def test_bad_router_values_fail_naming_the_key(tools, tmp_path):
    for values, named in (("router:\n  routes:\n    Fraud Model: v1\n", "/router/routes"),
                          ("router:\n  routes:\n    fraud: 'v 1'\n", "/router/routes/fraud"),
                          ("router:\n  pdb:\n    maxUnavailable: 1\n", "maxUnavailable")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(values)
        done = tools.helm("template", "x", str(CHART), "--kube-version", "1.36.1", "-f", str(bad), ok=False)
        assert done.returncode != 0 and named in done.stderr, done.stderr
