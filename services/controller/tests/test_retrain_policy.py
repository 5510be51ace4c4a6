"""The RetrainPolicy model reads the CRD's example and fills in the CRD's defaults."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from flywheel_contracts.retrain import RetrainPhase, RetrainPolicy

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "manifests" / "examples" / "retrainpolicy-fraud.yaml"
CRD = REPO / "manifests" / "crds" / "flywheel.dev_retrainpolicies.yaml"


def _crd_defaults() -> dict:
    spec = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    return {
        "cooldown": props["cooldown"]["default"],
        "mode": props["training"]["properties"]["mode"]["default"],
        "window": props["training"]["properties"]["window"]["default"],
        "minNewLabels": props["training"]["properties"]["minNewLabels"]["default"],
        "gates": {k: v["default"] for k, v in props["gates"]["properties"].items()},
        "triggers": props["triggers"]["default"],
    }


def test_the_example_reads_as_written():
    policy = RetrainPolicy.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    assert policy.name == "fraud" and policy.spec.model == "fraud"
    assert policy.spec.triggers.performance is not None and policy.spec.triggers.performance.minimum == 0.5
    assert policy.spec.cooldown_s == 6 * 3600 and policy.status.phase is RetrainPhase.IDLE
    assert policy.spec.rollout_template.spec["strategy"]["type"] == "Canary"


def test_a_bare_policy_gets_the_crds_defaults():
    bare = RetrainPolicy.model_validate({"metadata": {"name": "bare"}, "spec": {
        "model": "fraud", "rolloutTemplate": {"spec": {"strategy": {"type": "Shadow"}}}}})
    crd = _crd_defaults()
    spec = bare.spec
    assert spec.cooldown == crd["cooldown"]
    assert (spec.training.mode, spec.training.window, spec.training.min_new_labels) == (
        crd["mode"], crd["window"], crd["minNewLabels"])
    assert spec.gates.model_dump(by_alias=True) == crd["gates"]
    assert spec.triggers.manual is crd["triggers"]["manual"] and spec.triggers.drift_alert is None


@pytest.mark.parametrize(("edit", "named"), [
    (lambda s: s.update(triggers={"manual": False}), "at least one trigger"),
    (lambda s: s["rolloutTemplate"]["spec"].update(candidate={"version": "v9"}), "may not set model, stable or candidate"),
    (lambda s: s.update(cooldown="six hours"), "cooldown"),
])
def test_what_the_api_server_refuses_the_model_refuses_too(edit, named):
    doc = yaml.safe_load(EXAMPLE.read_text())
    edit(doc["spec"])
    with pytest.raises(ValidationError, match=named):
        RetrainPolicy.model_validate(doc)
