"""The RetrainPolicy CRD on a real API server: the example accepted and listed with its columns, defaults
filled in, wrong policies refused at apply time naming what is wrong (structural schema and CEL rules), and
the template of the ModelRollout it makes checked for the fields the controller fills in itself."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import yaml
from kubernetes import client

from chart_fixtures import crd_established
from conftest import REPO, wait_for

CRD = REPO / "manifests" / "crds" / "flywheel.dev_retrainpolicies.yaml"
EXAMPLE = REPO / "manifests" / "examples" / "retrainpolicy-fraud.yaml"


@pytest.fixture(scope="module")
def retrainpolicy_crd(api, tools) -> None:
    """Applied from manifests/crds/ and left in place (deleting a CRD deletes every policy on a shared cluster)."""
    tools.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    ext = client.ApiextensionsV1Api(api)
    wait_for("RetrainPolicy CRD Established", lambda: crd_established(ext, "retrainpolicies.flywheel.dev"))


@pytest.fixture
def policies(retrainpolicy_crd, namespace, tools) -> Iterator[tuple[str, Callable]]:
    yield namespace, tools.kubectl


def _apply(kubectl, namespace: str, doc: dict, *, dry_run: bool = False, ok: bool = True):
    argv = ["apply", "-n", namespace, "--validate=strict", "-f", "-"]
    if dry_run:
        argv.append("--dry-run=server")
    return kubectl(*argv, stdin=yaml.safe_dump(doc), ok=ok)


def test_the_example_is_accepted_and_listed_with_its_columns(policies):
    ns, kubectl = policies
    kubectl("apply", "-n", ns, "--validate=strict", "-f", str(EXAMPLE))
    table = kubectl("get", "retrainpolicies", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "MODE", "PHASE", "LAST-TRIGGER", "CANDIDATE", "AGE"]
    assert table[1].split()[:3] == ["fraud", "fraud", "Stateless"]
    assert kubectl("get", "rtp", "-n", ns, "-o", "name").stdout.split() == ["retrainpolicy.flywheel.dev/fraud"]


def test_the_api_server_fills_in_the_defaults(policies):
    ns, kubectl = policies
    _apply(kubectl, ns, {"apiVersion": "flywheel.dev/v1alpha1", "kind": "RetrainPolicy", "metadata": {"name": "bare"},
                         "spec": {"model": "fraud", "rolloutTemplate": {"spec": {"strategy": {"type": "Shadow"}}}}})
    spec = json.loads(kubectl("get", "retrainpolicy", "bare", "-n", ns, "-o", "json").stdout)["spec"]
    assert spec["triggers"] == {"manual": True}
    assert spec["training"] == {"mode": "Stateless", "window": "720h", "minNewLabels": 500}
    assert spec["gates"] == {"minPRAUCGain": 0, "ciLevel": 0.9, "maxECEIncrease": 0.02, "maxSlicePRAUCDrop": 0.05}
    assert (spec["cooldown"], spec["suspend"]) == ("6h", False)


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def _edit(path: str, value=None, *, drop: bool = False) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        if drop:
            node.pop(last)
        else:
            node[last] = value
    return edit


def _no_triggers(doc: dict) -> None:
    doc["spec"]["triggers"] = {"manual": False}


BAD = {  # what is wrong: (edit of the example, text the refusal must contain)
    "no trigger at all": (_no_triggers, "at least one trigger"),
    "template names the candidate": (_edit("spec.rolloutTemplate.spec.candidate", {"version": "v9"}),
                                     "may not set model, stable or candidate"),
    "template without a strategy": (_edit("spec.rolloutTemplate.spec.strategy", drop=True),
                                    "spec.rolloutTemplate.spec.strategy: Required value"),
    "no template": (_edit("spec.rolloutTemplate", drop=True), "spec.rolloutTemplate: Required value"),
    "unknown mode": (_edit("spec.training.mode", "Incremental"), 'spec.training.mode: Unsupported value'),
    "cool-down in words": (_edit("spec.cooldown", "six hours"), "spec.cooldown"),
    "performance above 1": (_edit("spec.triggers.performance.minimum", 1.5), "spec.triggers.performance.minimum"),
    "unknown alert category": (_edit("spec.triggers.driftAlert.categories", ["latency"]),
                               "spec.triggers.driftAlert.categories[0]"),
    "unknown field": (_edit("spec.gates.minPRAUC", 0.1), 'unknown field "spec.gates.minPRAUC"'),
    "ci level of 1": (_edit("spec.gates.ciLevel", 1), "spec.gates.ciLevel"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_wrong_policy_is_refused_naming_what_is_wrong(policies, case):
    ns, kubectl = policies
    edit, named = BAD[case]
    doc = _example()
    edit(doc)
    done = _apply(kubectl, ns, doc, dry_run=True, ok=False)
    assert done.returncode != 0, f"{case}: accepted"
    assert named in done.stderr, done.stderr
