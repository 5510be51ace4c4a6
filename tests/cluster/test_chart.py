"""charts/flywheel against a real API server: lint, server-side dry runs under the restricted Pod Security
Standard, and one release through install, upgrade, rollback and uninstall (kwok makes pods Ready)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from chart_fixtures import CHART, KUBE_VERSION, THIRD_PARTY_API_VERSIONS, pod_spec, scenario_files
from conftest import wait_for

RELEASE = "fw"
PREFIX = f"{RELEASE}-flywheel"
# What `helm uninstall` deliberately leaves in the namespace: the claims holding published models and feature
# data (helm.sh/resource-policy: keep), plus what Kubernetes puts in every namespace. Outside it, the
# ModelRollout CRD stays (helm does not delete CRDs).
KEPT_AFTER_UNINSTALL = {
    f"persistentvolumeclaim/{PREFIX}-model-repo",
    f"persistentvolumeclaim/{PREFIX}-feature-data",
    "configmap/kube-root-ca.crt",
    "serviceaccount/default",
}
SCENARIOS = [None, *scenario_files()]
# The Secrets manifests/flywheel.yaml takes from the user instead of generating them (`make manifests`).
MANIFEST_SECRETS = ("router.auth.existingSecret=flywheel-router-token",
                    "redis.auth.existingSecret=flywheel-redis-auth",
                    "features.auth.read.existingSecret=flywheel-features-read-token",
                    "features.auth.write.existingSecret=flywheel-features-write-token",
                    "transformer.auth.debug.existingSecret=flywheel-transformer-debug-token",
                    "modelRepo.signing.existingSecret=flywheel-model-signing-token")


def _scenario_id(path) -> str:
    return "default" if path is None else path.name


def test_lint_passes_strict_for_default_values_and_every_scenario(tools):
    for path in SCENARIOS:
        argv = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
        if path is not None:
            argv += ["-f", str(path)]
        tools.helm(*argv)


@pytest.mark.parametrize("values", SCENARIOS, ids=_scenario_id)
def test_scenario_is_accepted_by_a_server_side_dry_run_in_a_restricted_namespace(tools, third_party_crds,
                                                                                    restricted_namespace, values):
    docs = tools.render(*([values] if values else []), namespace=restricted_namespace, crds=True)
    assert "CustomResourceDefinition" in {d["kind"] for d in docs}
    manifest = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    tools.kubectl("apply", "--dry-run=server", "-n", restricted_namespace, "-f", "-", stdin=manifest)


def test_custom_resources_are_checked_against_the_upstream_crd_schemas(tools, third_party_crds, restricted_namespace):
    """The dry runs above mean something for InferenceService, ServiceMonitor and PrometheusRule: the real CRDs
    (KServe's, the Prometheus Operator's) refuse a field their schema does not have."""
    docs = tools.render(CHART / "ci" / "full-values.yaml", CHART / "ci" / "kserve-values.yaml",
                        namespace=restricted_namespace)
    wrong = {"InferenceService": ("predictor", "replicaz"), "ServiceMonitor": ("endpoints", None),
             "PrometheusRule": ("groups", None)}
    for doc in docs:
        if doc["kind"] not in wrong:
            continue
        field, extra = wrong[doc["kind"]]
        if extra:
            doc["spec"][field][extra] = 1
            named = f"spec.{field}.{extra}"
        else:
            doc["spec"][field] = "not-a-list"
            named = f"spec.{field}"
        done = tools.kubectl("apply", "--dry-run=server", "-n", restricted_namespace, "-f", "-",
                             stdin=yaml.safe_dump(doc), ok=False)
        assert done.returncode != 0 and named in done.stderr, (doc["kind"], done.stderr)
        del wrong[doc["kind"]]
    assert not wrong, f"not rendered: {sorted(wrong)}"


@pytest.mark.parametrize("values", SCENARIOS, ids=_scenario_id)
def test_selectors_never_carry_the_version_or_chart_label(tools, values):
    for doc in tools.render(*([values] if values else [])):
        match = ((doc.get("spec") or {}).get("selector") or {})
        match = match.get("matchLabels", match) if isinstance(match, dict) else {}
        assert not {"app.kubernetes.io/version", "helm.sh/chart"} & set(match), doc["metadata"]["name"]


def test_gpu_scenario_schedules_the_predictor_onto_gpu_nodes(tools):
    docs = tools.render(CHART / "ci" / "gpu-values.yaml")
    pod = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-predictor"))
    spec = pod["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-gpu")
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FLYWHEEL_PREDICTOR_VARIANT"] == "fp16"
    assert env["FLYWHEEL_PREDICTOR_PROVIDERS"].startswith("TensorrtExecutionProvider")


@pytest.mark.parametrize(("values", "named"), [
    ("predictor:\n  replicaz: 2\n", ["/predictor", "replicaz"]),
    ("features:\n  replicas: two\n", ["/features/replicas", "integer"]),
    ("mode: serverless\n", ["/mode", "deployment"]),
    ("modelRepo:\n  source: storageUri\n  storageUri:\n    uri: hf://org/model\n",
     ["/modelRepo/storageUri/uri", "hf://org/model"]),
], ids=["unknown-key", "wrong-type", "bad-enum", "model-hub-uri"])
def test_bad_values_fail_with_a_message_naming_the_key(tools, tmp_path, values, named):
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(values)
    done = tools.helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(bad), ok=False)
    assert done.returncode != 0
    for word in named:
        assert word in done.stderr, done.stderr


# --- one release, in order: install, helm test pod, upgrade, rollback, uninstall -----------------------
# These share the module-scoped namespace and run in file order; run them together (-k is fine as long as
# the install test is selected too).


def _available(d: dict) -> bool:
    return any(c["type"] == "Available" and c["status"] == "True" for c in d.get("status", {}).get("conditions", []))


def _env(deployment: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def _deployment(tools, namespace, component) -> dict:
    return json.loads(tools.kubectl("get", "deployment", f"{PREFIX}-{component}", "-n", namespace,
                                    "-o", "json").stdout)


def test_install_makes_every_workload_available_in_a_restricted_namespace(tools, release_namespace, storage_class):
    ns = release_namespace
    tools.helm("install", RELEASE, str(CHART), "-n", ns, "--wait", "--timeout", "90s",
               "--set", f"modelRepo.pvc.storageClassName={storage_class}",
               "--set", f"features.data.storageClassName={storage_class}", timeout=150)
    deployments = {d["metadata"]["name"]: d for d in tools.get(ns, "deployments")}
    assert set(deployments) == {f"{PREFIX}-{c}" for c in ("features", "predictor", "transformer", "router", "controller")}
    assert all(_available(d) for d in deployments.values()), [d["status"] for d in deployments.values()]
    (redis,) = tools.get(ns, "statefulsets")
    assert redis["status"].get("readyReplicas") == 1
    assert {s["metadata"]["name"]: [p["port"] for p in s["spec"]["ports"]] for s in tools.get(ns, "services")} == {
        f"{PREFIX}-features": [6566], f"{PREFIX}-predictor": [8080], f"{PREFIX}-transformer": [8090],
        f"{PREFIX}-redis": [6379], f"{PREFIX}-router": [8000, 8001]}
    crons = {c["metadata"]["name"]: c for c in tools.get(ns, "cronjobs")}
    assert set(crons) == {f"{PREFIX}-materialize", f"{PREFIX}-trainer"}
    assert crons[f"{PREFIX}-trainer"]["spec"]["suspend"] is True
    job_pod = crons[f"{PREFIX}-materialize"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert {e["name"]: e.get("value") for e in job_pod["containers"][0]["env"]}["FLYWHEEL_FEATURES_STORE_YAML"] \
        == "feature_store.cluster.yaml"
    for pvc in tools.get(ns, "persistentvolumeclaims"):
        assert pvc["status"]["phase"] == "Bound"
    env = _env(deployments[f"{PREFIX}-transformer"])
    assert env["FLYWHEEL_TRANSFORMER_PREDICTOR_URL"] == f"http://{PREFIX}-predictor:8080"
    assert env["FLYWHEEL_TRANSFORMER_FEATURES_URL"] == f"http://{PREFIX}-features:6566"
    # The password through a secretKeyRef the kubelet substitutes; never in the Deployment.
    assert _env(deployments[f"{PREFIX}-features"])["REDIS_CONNECTION_STRING"] \
        == f"{PREFIX}-redis:6379,password=$(REDIS_PASSWORD)"
    notes = tools.helm("get", "notes", RELEASE, "-n", ns).stdout
    for line in (f"port-forward svc/{PREFIX}-router 8000:8000", "curl -s localhost:8000/v1/models/fraud:predict",
                 f"port-forward svc/{PREFIX}-transformer 8090:8090", f"port-forward svc/{PREFIX}-predictor 8080:8080",
                 f"port-forward svc/{PREFIX}-features 6566:6566", "curl -s localhost:8090/v1/models/fraud:predict",
                 "curl -s localhost:8080/v2/models/fraud", "curl -s localhost:6566/get-online-features",
                 f"create job --from=cronjob/{PREFIX}-trainer train-now", "get modelrollouts"):
        assert line in notes, notes
    assert tools.kubectl("get", "crd", "modelrollouts.flywheel.dev", "-o", "name").stdout.strip()


def test_a_training_job_started_from_the_trainer_template_completes(tools, release_namespace):
    """The Job template is admitted under the restricted Pod Security Standard and runs to completion (kwok
    plays the pod), with the model repository writable and the feature data read-only."""
    ns = release_namespace
    tools.kubectl("create", "job", "--from", f"cronjob/{PREFIX}-trainer", "train-now", "-n", ns)
    job = json.loads(tools.kubectl("get", "job", "train-now", "-n", ns, "-o", "json").stdout)
    pod = job["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["data"].get("readOnly") is True and not mounts["model-repo"].get("readOnly")
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"data": f"{PREFIX}-feature-data", "model-repo": f"{PREFIX}-model-repo"}
    # Owned by the CronJob, so the release's uninstall removes it.
    assert job["metadata"]["ownerReferences"][0]["name"] == f"{PREFIX}-trainer"

    def succeeded() -> bool:
        status = json.loads(tools.kubectl("get", "job", "train-now", "-n", ns, "-o", "json").stdout)["status"]
        return status.get("succeeded") == 1

    wait_for("the training Job Complete", succeeded, timeout=90)


def test_helm_test_pod_posts_a_transaction_through_the_router(tools, release_namespace):
    hooks = [d for d in yaml.safe_load_all(tools.helm("get", "hooks", RELEASE, "-n", release_namespace).stdout) if d]
    (pod,) = [d for d in hooks if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["image"] == "docker.io/curlimages/curl:8.11.1"
    script = container["args"][0]
    assert f"http://{PREFIX}-router:8000/v1/models/fraud:predict" in script
    assert '"card_id": "c000042"' in script and "--fail-with-body" in script
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["restartPolicy"] == "Never"


def _predictor_nodes(tools, ns) -> set[str]:
    pods = [p for p in tools.get(ns, "pods") if p["metadata"]["labels"].get("app.kubernetes.io/component")
            == "predictor" and not p["metadata"].get("deletionTimestamp")]
    return {p["spec"].get("nodeName", "") for p in pods}


def test_upgrade_moves_the_predictor_onto_gpu_nodes_and_rollback_restores_it(tools, release_namespace):
    ns = release_namespace
    gpu_nodes = {n["metadata"]["name"] for n in json.loads(tools.kubectl("get", "nodes", "-o", "json").stdout)["items"]
                 if int(n["status"].get("allocatable", {}).get("nvidia.com/gpu", "0")) > 0}
    tools.helm("upgrade", RELEASE, str(CHART), "-n", ns, "--reuse-values", "--wait", "--timeout", "90s",
               "--set", "predictor.replicas=2", "--set", "predictor.variant=int8",
               *(["--set", "predictor.gpu.enabled=true"] if gpu_nodes else []), timeout=150)
    upgraded = _deployment(tools, ns, "predictor")
    assert upgraded["spec"]["replicas"] == 2 and _env(upgraded)["FLYWHEEL_PREDICTOR_VARIANT"] == "int8"
    wait_for("upgraded predictor Available with 2 replicas",
             lambda: _deployment(tools, ns, "predictor")["status"].get("availableReplicas") == 2)
    if gpu_nodes:
        assert upgraded["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        wait_for("predictor pods only on GPU nodes", lambda: _predictor_nodes(tools, ns) <= gpu_nodes)

    tools.helm("rollback", RELEASE, "1", "-n", ns, "--wait", "--timeout", "90s", timeout=150)
    restored = _deployment(tools, ns, "predictor")
    assert restored["spec"]["replicas"] == 1 and _env(restored)["FLYWHEEL_PREDICTOR_VARIANT"] == "auto"
    assert "nvidia.com/gpu" not in restored["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "tolerations" not in restored["spec"]["template"]["spec"]
    history = json.loads(tools.helm("history", RELEASE, "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"]


def test_uninstall_leaves_only_the_kept_claims(tools, release_namespace):
    ns = release_namespace
    tools.helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "90s", timeout=150)
    kinds = tools.kubectl("api-resources", "--verbs=list,delete", "--namespaced", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k.split(".")[0] != "events"]

    def remaining() -> set[str]:
        out = tools.kubectl("get", ",".join(kinds), "-n", ns, "-o", "name", "--ignore-not-found").stdout
        # kubectl names some kinds with their group ("deployment.apps/x"); compare on kind/name.
        return {f"{line.split('/')[0].split('.')[0]}/{line.split('/', 1)[1]}" for line in out.split()}

    wait_for(f"only {sorted(KEPT_AFTER_UNINSTALL)} left in the namespace",
             lambda: remaining() == KEPT_AFTER_UNINSTALL, timeout=60)
    # Helm never deletes what it installed from crds/ (that would delete every ModelRollout with it).
    assert tools.kubectl("get", "crd", "modelrollouts.flywheel.dev", "-o", "name").stdout.strip()


@pytest.mark.parametrize("values", SCENARIOS, ids=_scenario_id)
def test_each_template_file_holds_one_resource_named_component_kind(tools, values):
    out = tools.helm("template", "flywheel", str(CHART), "--kube-version", KUBE_VERSION,
                     *(["-f", str(values)] if values else []),
                     *(f"--api-versions={v}" for v in THIRD_PARTY_API_VERSIONS)).stdout
    per_file: dict[str, list[str]] = {}
    for doc in out.split("\n---\n"):
        source = re.search(r"^# Source: flywheel/templates/(\S+)$", doc, re.M)
        body = yaml.safe_load(doc)
        if source and body:
            per_file.setdefault(source[1], []).append(body["kind"])
    for path, kinds in per_file.items():
        assert len(kinds) == 1, f"{path} renders {kinds}"
        assert path.split("/")[-1].endswith(f"-{kinds[0].lower()}.yaml"), f"{path} holds a {kinds[0]}"


def test_kserve_mode_renders_one_inference_service_instead_of_the_deployments(tools):
    docs = tools.render(CHART / "ci" / "kserve-values.yaml", namespace="ml")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("InferenceService", "flywheel") in kinds
    assert not {n for k, n in kinds if k == "Deployment"} & {"flywheel-predictor", "flywheel-transformer"}
    (isvc,) = [d for d in docs if d["kind"] == "InferenceService"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    predictor, transformer = isvc["spec"]["predictor"], isvc["spec"]["transformer"]
    for part in (predictor, transformer):
        (container,) = part["containers"]
        assert {"name": "model-repo", "mountPath": "/mnt/models", "readOnly": True} in container["volumeMounts"]
        assert container["securityContext"]["runAsNonRoot"] is True
        assert part["maxReplicas"] == 4
    env = {e["name"]: e.get("value") for e in transformer["containers"][0]["env"]}
    assert env["FLYWHEEL_TRANSFORMER_PREDICTOR_URL"] == "http://flywheel-predictor.ml.svc.cluster.local"
    assert env["FLYWHEEL_TRANSFORMER_EVENT_SINK_URL"] == "http://flywheel-drift:8070"
    (test_pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert "http://flywheel-router:8000/v1/models/fraud:predict" in test_pod["spec"]["containers"][0]["args"][0]
    docs = tools.render(CHART / "ci" / "kserve-values.yaml", namespace="ml", extra=("--set", "router.enabled=false"))
    (test_pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert "http://flywheel-transformer.ml.svc.cluster.local/v1/models/fraud:predict" in test_pod["spec"]["containers"][0]["args"][0]


def test_rendered_manifests_in_the_repo_match_the_chart(tools):
    committed = (CHART.parents[1] / "manifests" / "flywheel.yaml").read_text()
    # Every credential from a Secret the user creates: a generated one would differ on every render (and
    # publish one credential to every kubectl-apply user). The Makefile's `manifests` target passes the same.
    rendered = tools.helm("template", "flywheel", str(CHART), "--namespace", "flywheel",
                          "--kube-version", KUBE_VERSION, "--skip-tests", "--include-crds",
                          *(a for s in MANIFEST_SECRETS for a in ("--set", s))).stdout
    lines = committed.splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    body = "".join(lines[header:])  # after the header comment (how to regenerate, which Secrets to create)
    for setting in MANIFEST_SECRETS:
        assert setting in "".join(lines[:header]), f"the header does not say to create {setting}"
    assert body == rendered, "manifests/flywheel.yaml is stale: run `make manifests`"


def test_claim_names_that_yaml_reads_as_booleans_stay_strings(tools):
    """`on`, `yes`, `y` are booleans to YAML 1.1 (which Kubernetes' decoder speaks): unquoted, a claim named
    so would reach the API server as `true` and be refused."""
    docs = tools.render(extra=("--set", "features.data.claimName=on", "--set", "modelRepo.pvc.claimName=yes",
                               "--set", "drift.enabled=true", "--set", "drift.spoolClaimName=y"))
    claims = {volume["persistentVolumeClaim"]["claimName"] for doc in docs
              for volume in pod_spec(doc).get("volumes", []) if "persistentVolumeClaim" in volume}
    assert claims == {"on", "yes", "y"}


def test_notes_say_how_to_reach_every_enabled_service(tools, restricted_namespace):
    out = tools.helm("install", "notes", str(CHART), "-n", restricted_namespace, "--dry-run=server",
                     "--set", "drift.enabled=true").stdout
    notes = out[out.index("NOTES:"):]
    for port in (8000, 8090, 8080, 6566, 8070):
        assert f"{port}:{port} &" in notes, notes
    assert "curl -s localhost:8070/v1/report" in notes
