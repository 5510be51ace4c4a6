"""tls.enabled: every Flywheel server of the chart answers HTTPS and every caller verifies it (flywheel_contracts.tls,
FLYWHEEL_TLS_*), from one Secret referenced by name; kserve mode's InferenceService pods stay plain HTTP towards
KServe and hold only the CA. Rendering is helm's; admission is the real API server's."""

from __future__ import annotations

import pytest
import yaml

from chart_fixtures import CHART, KUBE_VERSION, pod_spec
from conftest import _make_namespace

SECRET = "flywheel-tls"
ON = ("--set", "tls.enabled=true", "--set", f"tls.secretName={SECRET}", "--set", "drift.enabled=true")
TLS_DIR = "/var/run/flywheel/tls"
SERVERS = {"features", "predictor", "transformer", "drift", "router", "controller"}
URL_SETTINGS = {"FLYWHEEL_TRANSFORMER_FEATURES_URL", "FLYWHEEL_TRANSFORMER_PREDICTOR_URL",
                "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL", "FLYWHEEL_ROUTER_DEFAULT_UPSTREAM",
                "FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL", "FLYWHEEL_CONTROLLER_DRIFT_URL"}


def _component(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def _env(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _probes(container: dict) -> list[dict]:
    return [container[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in container]


@pytest.fixture(scope="module")
def tls_namespace(api):
    yield from _make_namespace(api, {"pod-security.kubernetes.io/enforce": "restricted",
                                     "pod-security.kubernetes.io/enforce-version": "latest"})


def test_off_by_default_plain_http_and_no_tls_files(tools):
    for doc in tools.render(extra=("--set", "drift.enabled=true")):
        if doc["kind"] != "Deployment":
            continue
        (container,) = pod_spec(doc)["containers"]
        env = _env(container)
        assert not any(name.startswith("FLYWHEEL_TLS_") for name in env), doc["metadata"]["name"]
        assert all(not (env.get(k) or "").startswith("https://") for k in URL_SETTINGS)
        assert all("scheme" not in probe for probe in _probes(container))


def test_every_server_answers_https_and_every_caller_verifies_with_the_ca(tools, tls_namespace):
    docs = tools.render(extra=ON, namespace=tls_namespace)
    served = set()
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        component = _component(doc)
        spec = pod_spec(doc)
        (container,) = spec["containers"]
        env = _env(container)
        assert env["FLYWHEEL_TLS_CERT_FILE"] == f"{TLS_DIR}/tls.crt"
        assert env["FLYWHEEL_TLS_KEY_FILE"] == f"{TLS_DIR}/tls.key"
        assert env["FLYWHEEL_TLS_CA_FILE"] == f"{TLS_DIR}/ca.crt"
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == TLS_DIR]
        assert mount["readOnly"] is True
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"] == {"secretName": SECRET, "defaultMode": 0o440}
        assert all(probe["scheme"] == "HTTPS" for probe in _probes(container)), component
        for name in URL_SETTINGS & env.keys():
            assert env[name] == "" or env[name].startswith("https://"), (name, env[name])
        served.add(component)
    assert served == SERVERS
    (test_pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert f"--cacert {TLS_DIR}/ca.crt" in test_pod["spec"]["containers"][0]["args"][0]
    assert "https://flywheel-router:8000/" in test_pod["spec"]["containers"][0]["args"][0]
    manifest = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    tools.kubectl("apply", "--dry-run=server", "-n", tls_namespace, "-f", "-", stdin=manifest)


def test_kserve_pods_keep_plain_http_to_kserve_and_hold_only_the_ca(tools):
    docs = tools.render(extra=(*ON, "--set", "mode=kserve"))
    (isvc,) = [d for d in docs if d["kind"] == "InferenceService"]
    for part in ("predictor", "transformer"):
        spec = isvc["spec"][part]
        (container,) = spec["containers"]
        env = _env(container)
        assert "FLYWHEEL_TLS_CERT_FILE" not in env and "FLYWHEEL_TLS_KEY_FILE" not in env
        assert all("scheme" not in probe for probe in _probes(container))
        if part == "transformer":
            assert env["FLYWHEEL_TLS_CA_FILE"] == f"{TLS_DIR}/ca.crt"
            assert env["FLYWHEEL_TRANSFORMER_FEATURES_URL"].startswith("https://")
            assert env["FLYWHEEL_TRANSFORMER_PREDICTOR_URL"].startswith("http://")  # KServe's own Service
            (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
            assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    (router,) = [d for d in docs if d["kind"] == "Deployment" and _component(d) == "router"]
    upstream = _env(pod_spec(router)["containers"][0])["FLYWHEEL_ROUTER_DEFAULT_UPSTREAM"]
    assert upstream.startswith("http://")  # the InferenceService's transformer, which KServe serves


def test_the_service_monitor_scrapes_https_with_the_ca(tools):
    docs = tools.render(extra=(*ON, "--set", "metrics.serviceMonitor.enabled=true"))
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"] == {"secret": {"name": SECRET, "key": "ca.crt"}}


def test_tls_without_its_secret_is_refused_naming_the_key_and_the_names_to_certify(tools):
    done = tools.helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, "--set", "tls.enabled=true", ok=False)
    assert done.returncode != 0 and "tls.secretName is required" in done.stderr, done.stderr
