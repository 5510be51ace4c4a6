"""The run-time training-serving skew check as the chart renders it (skew): a CronJob in the trainer image, on by
default wherever the trainer CronJob and the drift service both run, that reads the drift service's served-row
sample with the drift skew token and the feature data and model repository read-only, and holds nothing else (no
Redis password, no model signing key, no serving key pair). Its credentials and egress are also covered with every
component in test_chart_security.py (ALL_ON); its pod is admitted by the real API server here."""

from __future__ import annotations

import pytest
import yaml

from chart_fixtures import CHART, KUBE_VERSION, pod_spec
from conftest import REPO

DRIFT = ("--set", "drift.enabled=true")
TOKEN = "/var/run/flywheel/drift-skew-token/token"
TLS = ("--set", "tls.enabled=true", "--set", "tls.secretName=flywheel-tls")


def _component(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def _skew(docs: list[dict]) -> list[dict]:
    return [d for d in docs if _component(d) == "skew"]


def _cronjob(docs: list[dict]) -> tuple[dict, dict, dict]:
    """(CronJob, pod spec, container) of the skew check."""
    (cronjob,) = [d for d in _skew(docs) if d["kind"] == "CronJob"]
    spec = pod_spec(cronjob)
    (container,) = spec["containers"]
    return cronjob, spec, container


def _env(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container["env"]}


def _drift(docs: list[dict]) -> tuple[dict, dict]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and _component(d) == "drift"]
    spec = pod_spec(deployment)
    return spec, spec["containers"][0]


def test_on_wherever_the_trainer_and_drift_run_and_nowhere_else(tools):
    assert {d["kind"] for d in _skew(tools.render(extra=DRIFT))} == {"CronJob", "NetworkPolicy"}
    assert _skew(tools.render()) == []  # drift is off by default: nothing to check
    for off in (("--set", "skew.enabled=false"), ("--set", "trainer.enabled=false"),
                ("--set", "features.enabled=false"),
                ("--set", "modelRepo.source=image", "--set", "modelRepo.image.reference=r.example/m:1")):
        assert _skew(tools.render(extra=(*DRIFT, *off))) == [], off


def test_an_hourly_run_checks_every_served_version_with_the_skew_token_and_read_only_data(tools):
    cronjob, pod, container = _cronjob(tools.render(extra=DRIFT))
    assert cronjob["metadata"]["name"] == "flywheel-skew"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid" and cronjob["spec"]["schedule"] == "0 * * * *"
    assert cronjob["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert container["image"] == "flywheel/trainer:0.1.0" and container["args"] == ["skew"]
    env = _env(container)
    assert env["FLYWHEEL_TRAINER_MODEL"] == "fraud"
    assert env["FLYWHEEL_TRAINER_DRIFT_URL"] == "http://flywheel-drift:8070"
    assert env["FLYWHEEL_TRAINER_SKEW_TOKEN_FILE"] == TOKEN
    assert env["FLYWHEEL_TRAINER_SKEW_VERSION"] == "" and env["FLYWHEEL_TRAINER_SKEW_LIMIT"] == "500"
    assert "FLYWHEEL_TRAINER_DRIFT_CA_FILE" not in env
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["data"] == {"name": "data", "mountPath": "/data", "readOnly": True}
    assert mounts["model-repo"] == {"name": "model-repo", "mountPath": "/model_repo", "readOnly": True}
    assert mounts["drift-skew-token"] == {"name": "drift-skew-token", "mountPath": TOKEN.rsplit("/", 1)[0],
                                          "readOnly": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "flywheel-feature-data", "readOnly": True}
    assert volumes["model-repo"]["persistentVolumeClaim"] == {"claimName": "flywheel-model-repo", "readOnly": True}
    assert volumes["drift-skew-token"]["secret"] == {"secretName": "flywheel-drift-skew-token", "defaultMode": 0o440}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "1Gi"}
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"flywheel-drift-skew-token"}  # not the signing key: it reads metadata, it loads no model
    assert not [e for e in container["env"] if "valueFrom" in e or e["name"].startswith("REDIS")]


def test_the_feature_store_it_names_reads_the_trainers_registry_and_offline_store_without_redis(tools):
    """No Redis password and no egress to Redis: the configuration it names must need neither, and join from
    the registry and offline store the trainer's cluster configuration uses."""
    docs = tools.render(extra=DRIFT)
    env = _env(_cronjob(docs)[2])
    repo = REPO / "feature_repo"
    mine = yaml.safe_load((repo / env["FLYWHEEL_TRAINER_FEATURE_STORE_YAML"]).read_text())
    cluster = yaml.safe_load((repo / "feature_store.cluster.yaml").read_text())
    (trainer,) = [d for d in docs if d["kind"] == "CronJob" and _component(d) == "trainer"]
    trainer_env = _env(pod_spec(trainer)["containers"][0])
    assert mine["registry"]["path"].replace("${FLYWHEEL_DATA_DIR}", env["FLYWHEEL_DATA_DIR"]) \
        == trainer_env["FLYWHEEL_REGISTRY_PATH"]
    assert (mine["project"], mine["offline_store"]) == (cluster["project"], cluster["offline_store"])
    assert mine["online_store"]["type"] != "redis"


def test_values_reach_the_checks_settings(tools):
    extra = (*DRIFT, "--set", "skew.version=v3", "--set", "skew.limit=200", "--set", "skew.schedule=*/10 * * * *",
             "--set", "skew.suspend=true", "--set", "predictor.modelName=loans",
             "--set-json", 'skew.extraEnv={"FLYWHEEL_TRAINER_THREADS": "1"}')
    cronjob, _, container = _cronjob(tools.render(extra=extra))
    assert cronjob["spec"]["schedule"] == "*/10 * * * *" and cronjob["spec"]["suspend"] is True
    env = _env(container)
    assert (env["FLYWHEEL_TRAINER_SKEW_VERSION"], env["FLYWHEEL_TRAINER_SKEW_LIMIT"]) == ("v3", "200")
    assert env["FLYWHEEL_TRAINER_MODEL"] == "loans" and env["FLYWHEEL_TRAINER_THREADS"] == "1"


def test_with_tls_the_drift_url_is_https_verified_with_the_ca_alone(tools):
    _, pod, container = _cronjob(tools.render(extra=(*DRIFT, *TLS)))
    env = _env(container)
    assert env["FLYWHEEL_TRAINER_DRIFT_URL"] == "https://flywheel-drift:8070"
    assert env["FLYWHEEL_TRAINER_DRIFT_CA_FILE"] == "/var/run/flywheel/tls/ca.crt"
    assert not [k for k in env if k.startswith("FLYWHEEL_TLS_")]  # a client: it serves nothing
    (tls,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # not the serving key pair


def test_the_drift_service_checks_the_token_the_check_holds_and_admits_it(tools):
    docs = tools.render(extra=DRIFT)
    spec, container = _drift(docs)
    assert _env(container)["FLYWHEEL_DRIFT_SKEW_TOKEN_FILE"] == TOKEN
    assert {"name": "drift-skew-token", "secret": {"secretName": "flywheel-drift-skew-token", "defaultMode": 0o440}} \
        in spec["volumes"]
    assert "flywheel-drift-skew-token" in {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy" and _component(d) == "drift"]
    callers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
               for rule in policy["spec"]["ingress"] for p in rule.get("from", [])}
    assert "skew" in callers
    off = tools.render(extra=(*DRIFT, "--set", "skew.enabled=false"))
    (policy,) = [d for d in off if d["kind"] == "NetworkPolicy" and _component(d) == "drift"]
    assert "skew" not in {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                          for rule in policy["spec"]["ingress"] for p in rule.get("from", [])}
    # The drift service still closes the routes with its own token (an unset one would open nothing either).
    assert _env(_drift(off)[1])["FLYWHEEL_DRIFT_SKEW_TOKEN_FILE"] == TOKEN


def test_an_existing_secret_is_used_by_reference_by_both_sides(tools):
    docs = tools.render(extra=(*DRIFT, "--set", "drift.auth.skew.existingSecret=my-skew"))
    assert "flywheel-drift-skew-token" not in {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    for spec in (pod_spec(_cronjob(docs)[0]), _drift(docs)[0]):
        (volume,) = [v for v in spec["volumes"] if v["name"] == "drift-skew-token"]
        assert volume["secret"]["secretName"] == "my-skew"


@pytest.mark.parametrize("setting", ["skew.version=3", "skew.limit=0", "skew.limit=10001", "skew.schedul=* * * * *"])
def test_bad_values_are_refused_naming_the_key(tools, setting):
    done = tools.helm("template", "flywheel", str(CHART), "--kube-version", KUBE_VERSION, *DRIFT, "--set", setting,
                      ok=False)
    assert done.returncode != 0 and "skew" in done.stderr, done.stderr


@pytest.mark.parametrize("extra", [(), TLS], ids=["plain", "tls"])
def test_its_pod_is_admitted_under_the_restricted_pod_security_standard(tools, restricted_namespace, extra):
    """Pod Security admission only warns about a CronJob's template; its pod is what it enforces on, so the
    pod the CronJob would create is sent to the API server itself (a server-side dry run)."""
    cronjob, pod, _ = _cronjob(tools.render(extra=(*DRIFT, *extra), namespace=restricted_namespace))
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "skew-now", "labels": cronjob[
        "spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]}, "spec": pod}
    for doc in (manifest, cronjob):
        done = tools.kubectl("apply", "--dry-run=server", "-n", restricted_namespace, "-f", "-",
                             stdin=yaml.safe_dump(doc))
        assert "PodSecurity" not in done.stderr, done.stderr
