"""charts/flywheel is locked down by default (docs/security.md): NetworkPolicies with ingress and egress, every
credential in its own Secret reaching only the pods that use it (as a file, or through valueFrom, never as a
plain env value), Redis behind a password, bounded emptyDirs, pinnable images, and a production values file the
API server admits. Rendering is helm's; admission is the real API server's."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator

import pytest
import yaml

from chart_fixtures import CHART, KUBE_VERSION, pod_spec, scenario_files
from conftest import _make_namespace

DNS_PORTS = {(53, "UDP"), (53, "TCP")}
DIGEST = "sha256:" + "ab" * 32
# Which credential Secret (by the part after "flywheel-") each workload may hold, as a volume or a secretKeyRef;
# the credential map of docs/security.md. Everything else must hold none.
CREDENTIALS = {
    "router": {"router-token"},
    "controller": {"router-token"},
    "drift": {"drift-ingest-token", "drift-labels-token", "drift-skew-token", "model-signing-token"},
    "features": {"features-read-token", "features-write-token", "redis-auth"},
    "transformer": {"features-read-token", "drift-ingest-token", "transformer-debug-token", "model-signing-token"},
    "predictor": {"model-signing-token"},
    "redis": {"redis-auth"},
    "materialize": {"redis-auth"},
    "trainer": {"redis-auth", "model-signing-token"},
    "label-feed": {"drift-labels-token"},
    "skew": {"drift-skew-token"},
}
# The pods that publish (trainer) or load (the rest) model versions: they sign or check metadata.json with the
# model signing key (modelRepo.signing, FLYWHEEL_MODEL_SIGNING_KEY_FILE).
MODEL_SIGNING = {"trainer", "predictor", "transformer", "drift"}
SIGNING_KEY_FILE = "/var/run/flywheel/model-signing-token/token"
# The egress graph: component -> {(callee component or "anywhere"/"kubernetes-api", port)} besides DNS.
EGRESS = {
    "router": {("transformer", 8090), ("kubernetes-api", 443), ("kubernetes-api", 6443)},
    "controller": {("router", 8001), ("drift", 8070), ("kubernetes-api", 443), ("kubernetes-api", 6443)},
    "transformer": {("features", 6566), ("predictor", 8080), ("drift", 8070)},
    "features": {("redis", 6379)},
    "materialize": {("redis", 6379)},
    "trainer": {("redis", 6379)},
    "label-feed": {("drift", 8070)},
    "skew": {("drift", 8070)},
    "predictor": set(),
    "drift": set(),
    "redis": set(),
}
WORKLOADS = {"Deployment", "StatefulSet", "CronJob", "Job", "Pod"}


def _component(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def _pod_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    """(component, pod spec) of a workload, and of each part of an InferenceService."""
    if doc["kind"] == "InferenceService":
        for part in ("predictor", "transformer"):
            yield part, doc["spec"][part]
    elif doc["kind"] in WORKLOADS:
        yield _component(doc), pod_spec(doc) or doc.get("spec", {})


def _containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _secret_values(docs: list[dict]) -> dict[str, str]:
    found = {}
    for doc in docs:
        if doc["kind"] == "Secret":
            for key, value in (doc.get("data") or {}).items():
                found[f"{doc['metadata']['name']}/{key}"] = base64.b64decode(value).decode()
            for key, value in (doc.get("stringData") or {}).items():
                found[f"{doc['metadata']['name']}/{key}"] = value
    return found


def plain_credentials(docs: list[dict]) -> list[str]:
    """Every env entry of every container whose plain `value` carries a Secret's value or a literal password."""
    secrets = _secret_values(docs)
    leaks = []
    for doc in docs:
        for _component, spec in _pod_specs(doc):
            for container in _containers(spec):
                for env in container.get("env", []):
                    value = str(env.get("value", ""))
                    where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}/{env['name']}"
                    leaks += [f"{where} holds {name}" for name, secret in secrets.items() if secret and secret in value]
                    if re.search(r"password=(?!\$\(REDIS_PASSWORD\))", value):
                        leaks.append(f"{where} holds a literal password")
    return leaks


def _render(tools, *values, **kw) -> list[dict]:
    return tools.render(*values, **kw)


def _sets(**values: str) -> tuple[str, ...]:
    return tuple(a for k, v in values.items() for a in ("--set", f"{k.replace('__', '.')}={v}"))


ALL_ON = (*_sets(drift__enabled="true", labelFeed__enabled="true", skew__enabled="true"),
          "--set", "labelFeed.truthFiles.concept=live/concept.jsonl")


@pytest.fixture(scope="module")
def locked_namespace(api) -> Iterator[str]:
    yield from _make_namespace(api, {"pod-security.kubernetes.io/enforce": "restricted",
                                     "pod-security.kubernetes.io/enforce-version": "latest"})


def _dry_run(tools, namespace: str, docs: list[dict]) -> None:
    manifest = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    done = tools.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=manifest)
    # Pod Security admission enforces on pods only: a CronJob's or Deployment's template that breaks the standard
    # is admitted with a warning (and its pods refused later), so the warning is the failure here.
    assert "would violate PodSecurity" not in done.stderr, done.stderr


# --- NetworkPolicies -----------------------------------------------------------------------------------------


def _rule_targets(rule: dict, pols: dict) -> set[tuple[str, int]]:
    ports = {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}
    if ports == DNS_PORTS:
        return set()
    targets = set()
    for peer in rule.get("to") or [{}]:
        if "podSelector" in peer and "namespaceSelector" not in peer:
            name = peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        elif "ipBlock" in peer and peer["ipBlock"]["cidr"] in pols["api_cidrs"]:
            name = "kubernetes-api"
        else:
            name = "anywhere"
        targets |= {(name, port) for port, _ in ports}
    return targets


def egress_graph(docs: list[dict], api_cidrs=("0.0.0.0/0",)) -> dict[str, set[tuple[str, int]]]:
    graph = {}
    for doc in docs:
        if doc["kind"] != "NetworkPolicy":
            continue
        spec = doc["spec"]
        assert "Egress" in spec["policyTypes"], doc["metadata"]["name"]
        component = spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        graph[component] = set().union(*[_rule_targets(r, {"api_cidrs": api_cidrs}) for r in spec["egress"]])
    return graph


def test_every_pod_has_a_network_policy_with_egress_by_default_and_the_api_server_admits_them(tools, locked_namespace):
    docs = _render(tools, extra=ALL_ON, namespace=locked_namespace)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    selected = {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in policies}
    pods = {c for d in docs for c, _ in _pod_specs(d) if d["kind"] != "Pod"}  # the helm test pod is a client
    assert pods <= selected, f"pods without a NetworkPolicy: {pods - selected}"
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"], policy["metadata"]["name"]
        rules = policy["spec"]["egress"]
        dns = [r for r in rules if {(p["port"], p["protocol"]) for p in r.get("ports", [])} == DNS_PORTS]
        if _component(policy) == "redis":
            assert rules == [], "Redis calls nothing, not even DNS"
        else:
            (rule,) = dns
            assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    tools.kubectl("apply", "-n", locked_namespace, "-f", "-",
                  stdin="\n---\n".join(yaml.safe_dump(p) for p in policies))
    stored = json.loads(tools.kubectl("get", "networkpolicies", "-n", locked_namespace, "-o", "json").stdout)["items"]
    assert len(stored) == len(policies)
    for policy in stored:  # as the API server keeps them (an empty egress list is dropped: deny all)
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert policy["spec"].get("egress") or _component(policy) == "redis"


def test_each_component_reaches_only_what_it_calls(tools):
    """The graph, edge by edge: the predictor and drift call nothing, nobody but the feature server and the two
    Jobs reach Redis, only the router and the controller reach the API server."""
    assert egress_graph(_render(tools, extra=ALL_ON)) == EGRESS
    graph = egress_graph(_render(tools))  # drift off: nobody reaches it
    assert ("drift", 8070) not in graph["transformer"] | graph["controller"]
    assert "drift" not in graph


def test_urls_outside_the_release_open_only_their_port(tools):
    docs = _render(tools, extra=(*ALL_ON, *_sets(controller__prometheusUrl="http://prometheus.monitoring:9090",
                                                  transformer__eventSinkUrl="https://events.example.com/intake",
                                                  redis__enabled="false", redis__externalSecret__name="ext-redis",
                                                  redis__externalPort="6380"),
                                  "--set-json", 'networkPolicy.extraEgress.drift.webhooks={"ports": [{"port": 443}]}'))
    graph = egress_graph(docs)
    assert ("anywhere", 9090) in graph["controller"]
    assert ("anywhere", 443) in graph["transformer"] and ("drift", 8070) not in graph["transformer"]
    assert graph["features"] == graph["materialize"] == graph["trainer"] == {("anywhere", 6380)}
    assert graph["drift"] == {("anywhere", 443)}
    assert "redis" not in graph


def test_the_kubernetes_api_egress_follows_its_values(tools):
    docs = _render(tools, extra=_sets(networkPolicy__kubernetesApi__cidrs__any="10.96.0.1/32",
                                      networkPolicy__kubernetesApi__ports__apiserver="16443"))
    graph = egress_graph(docs, api_cidrs=("10.96.0.1/32",))
    for component in ("router", "controller"):
        assert {t for t in graph[component] if t[0] == "kubernetes-api"} == {
            ("kubernetes-api", 443), ("kubernetes-api", 16443)}


# --- credentials ---------------------------------------------------------------------------------------------

SCENARIO_IDS = ["default", "drift", "redis-tls", *(p.name for p in scenario_files())]


def _scenario(tools, name: str) -> list[dict]:
    if name == "default":
        return _render(tools)
    if name == "drift":
        return _render(tools, extra=ALL_ON)
    if name == "redis-tls":
        return _render(tools, extra=_sets(redis__tls__enabled="true", redis__tls__secretName="redis-tls"))
    return _render(tools, CHART / "ci" / name)


@pytest.mark.parametrize("name", SCENARIO_IDS)
def test_no_credential_reaches_a_container_as_a_plain_env_value(tools, name):
    docs = _scenario(tools, name)
    assert not plain_credentials(docs)
    for doc in docs:
        for _, spec in _pod_specs(doc):
            for container in _containers(spec):
                for env in container.get("env", []):
                    if re.search(r"(TOKEN|PASSWORD|SECRET)$", env["name"]):
                        assert "value" not in env, f"{doc['metadata']['name']}: {env['name']} is a plain value"


def test_the_scanner_finds_a_password_put_in_a_plain_env_value(tools):
    """The check above can fail: the Redis password copied into a plain value (what the chart did before, with
    redis.externalConnectionString) is reported."""
    docs = _render(tools)
    password = _secret_values(docs)["flywheel-redis-auth/password"]
    features = next(d for d in docs if d["kind"] == "Deployment" and _component(d) == "features")
    features["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "REDIS_CONNECTION_STRING", "value": f"flywheel-redis:6379,password={password}"})
    assert len(plain_credentials(docs)) == 2  # the Secret's value, and a literal password=


def _held_secrets(spec: dict) -> set[str]:
    held = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for container in _containers(spec):
        held |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                 if "secretKeyRef" in e.get("valueFrom", {})}
    return {name.removeprefix("flywheel-") for name in held}


@pytest.mark.parametrize("extra", [ALL_ON, (*ALL_ON, "--set", "mode=kserve")], ids=["deployment", "kserve"])
def test_each_workload_holds_only_its_own_credentials(tools, extra):
    docs = _render(tools, extra=extra)
    held = {c: _held_secrets(s) for d in docs for c, s in _pod_specs(d) if d["kind"] != "Pod"}
    expected = {c: CREDENTIALS[c] for c in held}
    assert held == expected
    generated = {d["metadata"]["name"].removeprefix("flywheel-") for d in docs if d["kind"] == "Secret"}
    assert generated == set().union(*CREDENTIALS.values())


def test_token_files_are_read_only_mounts_of_their_secrets(tools):
    want = {"drift": {"FLYWHEEL_DRIFT_INGEST_TOKEN_FILE": "drift-ingest-token",
                      "FLYWHEEL_DRIFT_LABELS_TOKEN_FILE": "drift-labels-token",
                      "FLYWHEEL_DRIFT_SKEW_TOKEN_FILE": "drift-skew-token"},
            "features": {"FLYWHEEL_FEATURES_READ_TOKEN_FILE": "features-read-token",
                         "FLYWHEEL_FEATURES_WRITE_TOKEN_FILE": "features-write-token"},
            "transformer": {"FLYWHEEL_TRANSFORMER_FEATURES_TOKEN_FILE": "features-read-token",
                            "FLYWHEEL_TRANSFORMER_EVENT_TOKEN_FILE": "drift-ingest-token",
                            "FLYWHEEL_TRANSFORMER_DEBUG_TOKEN_FILE": "transformer-debug-token"},
            "router": {"FLYWHEEL_ROUTER_TOKEN_FILE": "router-token"},
            "controller": {"FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE": "router-token"}}
    for doc in _render(tools, extra=ALL_ON):
        if doc["kind"] != "Deployment":
            continue
        spec = pod_spec(doc)
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        files = {k: v for k, v in env.items() if k.endswith("_TOKEN_FILE")}
        assert set(files) == set(want.get(_component(doc), {})), doc["metadata"]["name"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        for name, path in files.items():
            mount = mounts[path.rsplit("/", 1)[0]]
            assert mount["readOnly"] is True
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"] == f"flywheel-{want[_component(doc)][name]}"
            assert secret["defaultMode"] == 0o440
    env = {e["name"]: e.get("value") for d in _render(tools) if d["kind"] == "Deployment"
           and _component(d) == "transformer" for e in pod_spec(d)["containers"][0]["env"]}
    assert env["FLYWHEEL_TRANSFORMER_DEBUG_FEATURES"] == "false"


@pytest.mark.parametrize("extra", [ALL_ON, (*ALL_ON, "--set", "mode=kserve")], ids=["deployment", "kserve"])
def test_the_model_signing_key_is_a_read_only_file_in_exactly_the_pods_that_publish_or_load_models(tools, extra):
    seen = set()
    for doc in _render(tools, extra=extra):
        for component, spec in _pod_specs(doc):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for container in spec.get("containers", []):
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                if component not in MODEL_SIGNING:
                    assert "FLYWHEEL_MODEL_SIGNING_KEY_FILE" not in env, component
                    continue
                assert env["FLYWHEEL_MODEL_SIGNING_KEY_FILE"] == SIGNING_KEY_FILE, component
                (mount,) = [m for m in container["volumeMounts"] if SIGNING_KEY_FILE.startswith(m["mountPath"] + "/")]
                assert mount["readOnly"] is True
                assert volumes[mount["name"]]["secret"] == {"secretName": "flywheel-model-signing-token",
                                                            "defaultMode": 0o440}
                seen.add(component)
            for container in spec.get("initContainers", []):  # the storage initializer copies, it checks nothing
                assert "FLYWHEEL_MODEL_SIGNING_KEY_FILE" not in {e["name"] for e in container.get("env", [])}
    assert seen == MODEL_SIGNING


@pytest.mark.parametrize("extra", [ALL_ON, (*ALL_ON, "--set", "mode=kserve")], ids=["deployment", "kserve"])
def test_model_signing_off_mounts_no_key_and_sets_no_key_file(tools, extra):
    docs = _render(tools, extra=(*extra, *_sets(modelRepo__signing__enabled="false")))
    assert "flywheel-model-signing-token" not in {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    for doc in docs:
        for component, spec in _pod_specs(doc):
            assert "model-signing-token" not in _held_secrets(spec), component
            for container in _containers(spec):
                assert "FLYWHEEL_MODEL_SIGNING_KEY_FILE" not in {e["name"] for e in container.get("env", [])}
                assert not [m for m in container.get("volumeMounts", []) if "model-signing" in m["name"]]


def _controller(docs: list[dict]) -> tuple[dict, dict]:
    """(pod spec, container) of the controller Deployment."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and _component(d) == "controller"]
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    return spec, container


@pytest.mark.parametrize("extra", [ALL_ON, (*ALL_ON, "--set", "mode=kserve"),
                                   (*ALL_ON, *_sets(modelRepo__pvc__claimName="models"))],
                         ids=["deployment", "kserve", "existing-claim"])
def test_the_controller_reads_candidates_gates_from_a_read_only_mount_of_the_servers_model_repository(tools, extra):
    docs = _render(tools, extra=extra)
    spec, container = _controller(docs)
    assert {e["name"]: e.get("value") for e in container["env"]}["FLYWHEEL_CONTROLLER_MODEL_REPO"] == "/mnt/models"
    assert [m for m in container["volumeMounts"] if m["name"] == "model-repo"] == [
        {"name": "model-repo", "mountPath": "/mnt/models", "readOnly": True}]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "model-repo"]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    servers = [v for d in docs for c, s in _pod_specs(d) if c in ("predictor", "transformer", "drift")
               for v in s["volumes"] if v["name"] == "model-repo"]
    assert servers and all(v == volume for v in servers)  # the claim the servers load versions from
    assert "initContainers" not in spec and "model-signing-token" not in _held_secrets(spec)  # reads, checks no key


@pytest.mark.parametrize("source", [_sets(modelRepo__source="image", modelRepo__image__reference="r.example/m:1"),
                                    _sets(modelRepo__source="storageUri", modelRepo__storageUri__uri="s3://b/m")],
                         ids=["image", "storageUri"])
def test_the_controller_mounts_no_snapshot_of_the_model_repository(tools, source):
    # A snapshot taken at pod start misses every candidate published later: each rollout would be refused.
    spec, container = _controller(_render(tools, extra=(*ALL_ON, *source)))
    assert "FLYWHEEL_CONTROLLER_MODEL_REPO" not in {e["name"] for e in container["env"]}
    assert "model-repo" not in {v["name"] for v in spec["volumes"]}
    assert "initContainers" not in spec


def test_existing_secrets_replace_every_generated_one(tools):
    names = {"router.auth": "my-router", "drift.auth.ingest": "my-ingest", "drift.auth.labels": "my-labels",
             "drift.auth.skew": "my-skew",
             "features.auth.read": "my-read", "features.auth.write": "my-write",
             "transformer.auth.debug": "my-debug", "redis.auth": "my-redis", "modelRepo.signing": "my-signing"}
    docs = _render(tools, extra=(*ALL_ON, *(a for k, v in names.items() for a in ("--set", f"{k}.existingSecret={v}"))))
    assert not [d for d in docs if d["kind"] == "Secret"]
    held = set().union(*(_held_secrets(s) for d in docs for _, s in _pod_specs(d)))
    assert held == set(names.values())


def test_generated_credentials_survive_an_upgrade(tools, locked_namespace):
    ns = locked_namespace
    tools.helm("install", "keep", str(CHART), "-n", ns, "--set", "drift.enabled=true", timeout=150)
    try:
        def secrets() -> dict[str, dict]:
            return {s["metadata"]["name"]: s["data"] for s in tools.get(ns, "secrets")
                    if s["metadata"]["name"].startswith("keep-flywheel-")}

        before = secrets()
        assert set(before) == {f"keep-flywheel-{n}" for n in set().union(*CREDENTIALS.values())}
        assert len({v for data in before.values() for v in data.values()}) == len(before)  # all different
        tools.helm("upgrade", "keep", str(CHART), "-n", ns, "--reuse-values", "--set", "predictor.replicas=2",
                   timeout=150)
        assert secrets() == before
    finally:
        tools.helm("uninstall", "keep", "-n", ns, timeout=150)


# --- Redis ---------------------------------------------------------------------------------------------------


def test_redis_requires_its_password_and_clients_read_it_from_the_secret(tools):
    docs = _render(tools)
    (redis,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (container,) = pod_spec(redis)["containers"]
    assert container["args"][:2] == ["--requirepass", "$(REDIS_PASSWORD)"]
    env = {e["name"]: e for e in container["env"]}
    for name in ("REDIS_PASSWORD", "REDISCLI_AUTH"):  # the server's password, and the probe's
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "flywheel-redis-auth", "key": "password"}
    for doc in docs:
        for component, spec in _pod_specs(doc):
            if component in ("features", "materialize", "trainer"):
                env = {e["name"]: e for e in spec["containers"][0]["env"]}
                names = list(env)
                assert names.index("REDIS_PASSWORD") < names.index("REDIS_CONNECTION_STRING")  # $(...) expands
                assert env["REDIS_CONNECTION_STRING"]["value"] == "flywheel-redis:6379,password=$(REDIS_PASSWORD)"


def test_redis_tls_serves_only_tls_and_clients_verify_it(tools, locked_namespace):
    docs = _render(tools, extra=_sets(redis__tls__enabled="true", redis__tls__secretName="redis-tls"),
                   namespace=locked_namespace)
    (redis,) = [d for d in docs if d["kind"] == "StatefulSet"]
    args = pod_spec(redis)["containers"][0]["args"]
    assert args[args.index("--port") + 1] == "0" and args[args.index("--tls-port") + 1] == "6379"
    assert "--tls" in pod_spec(redis)["containers"][0]["readinessProbe"]["exec"]["command"]
    for doc in docs:
        for component, spec in _pod_specs(doc):
            if component in ("features", "materialize", "trainer"):
                env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
                assert env["REDIS_CONNECTION_STRING"].endswith(
                    ",ssl=true,ssl_ca_certs=/var/run/flywheel/redis-tls/ca.crt")
                volumes = {v["name"]: v for v in spec["volumes"]}
                assert volumes["redis-tls"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    _dry_run(tools, locked_namespace, docs)
    done = tools.helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, "--set", "redis.tls.enabled=true",
                      ok=False)
    assert done.returncode != 0 and "redis.tls.secretName is required" in done.stderr


@pytest.mark.parametrize(("argv", "named"), [
    (("--set", "redis.enabled=false"), "redis.externalSecret.name is required"),
    (("--set", "redis.enabled=false", "--set", "redis.externalConnectionString=r:6379,password=hunter2"),
     "externalConnectionString"),
    (("--set", f"predictor.image.digest={DIGEST[:-1]}"), "/predictor/image/digest"),
    (("--set-json", 'router.extraEnv=[{"name": "X"}]'), "/router/extraEnv"),
], ids=["external-redis-without-secret", "removed-connection-string", "bad-digest", "env-without-value"])
def test_unsafe_or_incomplete_values_are_refused_naming_the_key(tools, argv, named):
    done = tools.helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, *argv, ok=False)
    assert done.returncode != 0 and named in done.stderr, done.stderr


def test_external_redis_connection_string_comes_from_its_secret(tools):
    docs = _render(tools, CHART / "ci" / "external-values.yaml")
    (features,) = [d for d in docs if d["kind"] == "Deployment" and _component(d) == "features"]
    env = {e["name"]: e for e in pod_spec(features)["containers"][0]["env"]}
    assert env["REDIS_CONNECTION_STRING"] == {"name": "REDIS_CONNECTION_STRING", "valueFrom": {
        "secretKeyRef": {"name": "flywheel-redis", "key": "connectionString"}}}
    assert "REDIS_PASSWORD" not in env


# --- extraEnv, emptyDirs, images, production -----------------------------------------------------------------


def test_extra_env_takes_a_map_or_full_env_var_entries_and_both_are_admitted(tools, locked_namespace):
    ref = {"secretKeyRef": {"name": "s", "key": "k"}}
    as_map = {"PLAIN": "1", "FROM_SECRET": {"valueFrom": ref}}
    as_list = [{"name": "PLAIN", "value": "1"}, {"name": "FROM_SECRET", "valueFrom": ref}]
    components = ("features", "predictor", "transformer", "drift", "trainer", "skew", "router")
    for form in (as_map, as_list):
        extra = tuple(a for c in components for a in ("--set-json", f"{c}.extraEnv={json.dumps(form)}"))
        docs = _render(tools, extra=(*ALL_ON, *extra), namespace=locked_namespace)
        for doc in docs:
            for component, spec in _pod_specs(doc):
                if component in components:
                    env = spec["containers"][0]["env"]
                    assert {"name": "FROM_SECRET", "valueFrom": ref} in env, component
                    assert {"name": "PLAIN", "value": "1"} in env, component
        _dry_run(tools, locked_namespace, docs)


@pytest.mark.parametrize("name", SCENARIO_IDS)
def test_every_empty_dir_has_a_size_limit(tools, name):
    for doc in _scenario(tools, name):
        for _, spec in _pod_specs(doc):
            for volume in spec.get("volumes", []):
                if "emptyDir" in volume:
                    assert volume["emptyDir"].get("sizeLimit"), f"{doc['metadata']['name']}: {volume['name']}"


def test_the_drift_spool_size_is_a_value(tools):
    docs = _render(tools, extra=(*ALL_ON, *_sets(drift__spoolSizeLimit="3Gi")))
    (drift,) = [d for d in docs if d["kind"] == "Deployment" and _component(d) == "drift"]
    assert {v["name"]: v for v in pod_spec(drift)["volumes"]}["spool"]["emptyDir"] == {"sizeLimit": "3Gi"}


def test_images_can_be_pinned_by_digest(tools):
    images = ("features", "predictor", "transformer", "drift", "trainer", "router", "controller")
    extra = (*ALL_ON, *(a for i in images for a in ("--set", f"{i}.image.digest={DIGEST}")),
             "--set", f"redis.image.digest={DIGEST}", "--set", f"tests.image.digest={DIGEST}")
    refs = {c["image"] for d in _render(tools, extra=extra) for _, s in _pod_specs(d) for c in _containers(s)}
    assert refs == {f"flywheel/{i}@{DIGEST}" for i in images} | {f"docker.io/library/redis@{DIGEST}",
                                                                  f"docker.io/curlimages/curl@{DIGEST}"}


def test_production_values_run_every_server_twice_behind_budgets_and_are_admitted(tools, third_party_crds,
                                                                                   locked_namespace):
    docs = _render(tools, CHART / "ci" / "production-values.yaml", namespace=locked_namespace)
    single = {"drift", "redis"}  # a local spool / a single online store, by design
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet") and _component(doc) not in single:
            assert doc["spec"].get("replicas", 2) >= 2, doc["metadata"]["name"]  # no replicas: the HPA's minimum
    budgets = {_component(d) for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert budgets == {"features", "predictor", "transformer", "router"}
    _dry_run(tools, locked_namespace, docs)


# --- RBAC ----------------------------------------------------------------------------------------------------


def test_no_service_account_of_the_chart_can_read_secrets(tools, locked_namespace):
    """The credentials live in Secrets; the ServiceAccounts that mount API tokens (router, controller) must not be
    able to read them (the kube API egress is open to them)."""
    ns = locked_namespace
    docs = _render(tools, extra=ALL_ON, namespace=ns)
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    tools.kubectl("apply", "-n", ns, "-f", "-", stdin="\n---\n".join(yaml.safe_dump(d) for d in rbac))
    accounts = [d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount"]
    assert set(accounts) == {"flywheel-router", "flywheel-controller"}
    for account in [*accounts, "default"]:
        for verb, resource in (("get", "secrets"), ("list", "secrets"), ("watch", "secrets"),
                               ("get", "secrets/flywheel-redis-auth"), ("create", "pods/exec"),
                               ("list", "networkpolicies"), ("delete", "networkpolicies")):
            done = tools.kubectl("auth", "can-i", verb, resource, "-n", ns,
                                 "--as", f"system:serviceaccount:{ns}:{account}", ok=False)
            assert done.stdout.strip() == "no", (account, verb, resource)
