"""The label feed as the chart renders it (labelFeed): off by default; on, a CronJob that delivers due labels once
per run with the drift labels token, reading the truth files from the feature data volume. Its credentials,
egress graph and Pod Security admission are covered with every component in test_chart_security.py (ALL_ON)."""

from __future__ import annotations

import pytest

from chart_fixtures import CHART, KUBE_VERSION

ON = ("--set", "drift.enabled=true", "--set", "labelFeed.enabled=true",
      "--set", "labelFeed.truthFiles.concept=live/concept.jsonl", "--set", "labelFeed.truthFiles.none=live/none.jsonl")


def _label_feed(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "label-feed"]


def test_off_by_default_even_with_drift_on(tools):
    assert _label_feed(tools.render(extra=("--set", "drift.enabled=true"))) == []


def test_needs_the_drift_service_to_post_to(tools):
    assert _label_feed(tools.render(extra=("--set", "labelFeed.enabled=true"))) == []


def test_a_run_delivers_what_is_due_once_with_the_labels_token(tools):
    (cronjob,) = [d for d in _label_feed(tools.render(extra=ON)) if d["kind"] == "CronJob"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid" and cronjob["spec"]["schedule"] == "* * * * *"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "flywheel_core.label_feed"]
    args = container["args"]
    assert args[:3] == ["--once", "--data", "/data"]
    assert args[args.index("--drift-url") + 1] == "http://flywheel-drift:8070"
    assert args[args.index("--token-file") + 1] == "/var/run/flywheel/drift-labels-token/token"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--truth"] == ["/data/live/concept.jsonl",
                                                                           "/data/live/none.jsonl"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["drift-labels-token"]["secret"]["secretName"] == "flywheel-drift-labels-token"
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "flywheel-feature-data"


def test_with_tls_the_drift_url_is_https_checked_with_the_ca(tools):
    docs = tools.render(extra=(*ON, "--set", "tls.enabled=true", "--set", "tls.secretName=flywheel-tls"))
    (cronjob,) = [d for d in _label_feed(docs) if d["kind"] == "CronJob"]
    args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--drift-url") + 1] == "https://flywheel-drift:8070"
    assert args[args.index("--ca-file") + 1] == "/var/run/flywheel/tls/ca.crt"


@pytest.mark.parametrize("path", ["../etc/passwd", "live/../../etc/passwd", "/etc/passwd"])
def test_a_truth_path_outside_the_volume_is_refused_naming_the_key(tools, path):
    done = tools.helm("template", "flywheel", str(CHART), "--kube-version", KUBE_VERSION, *ON[:4],
                      "--set", f"labelFeed.truthFiles.bad={path}",
                      ok=False)
    assert done.returncode != 0 and "labelFeed" in done.stderr
