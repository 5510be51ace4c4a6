"""skaffold.yaml stays consistent with the repository and the chart: every artifact's Dockerfile exists,
and each profile's Helm values render (the chart's schema rejects unknown keys, so a renamed value fails
here). The skaffold binary itself is not run: there is no container engine to build with."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from chart_fixtures import tools  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD = yaml.safe_load((ROOT / "skaffold.yaml").read_text())


def apply_patches(config: dict, patches: list[dict]) -> dict:
    """The subset of JSON Patch skaffold profiles use here: add / replace on a path of keys and indices."""
    config = copy.deepcopy(config)
    for patch in patches:
        *parents, last = [int(p) if p.isdigit() else p for p in patch["path"].strip("/").split("/")]
        node = config
        for key in parents:
            node = node[key]
        node[last] = patch["value"]
    return config


def helm_sets(config: dict) -> list[str]:
    release = config["deploy"]["helm"]["releases"][0]
    values = {key: re.sub(r"\{\{\.IMAGE_(REPO|TAG)_[a-z_]+\}\}", "x", template)
              for key, template in release.get("setValueTemplates", {}).items()}
    values.update({key: str(v).lower() if isinstance(v, bool) else str(v) for key, v in release.get("setValues", {}).items()})
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def test_every_artifact_has_its_dockerfile():
    for artifact in SKAFFOLD["build"]["artifacts"]:
        assert (ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file(), artifact["image"]


def test_every_service_has_an_artifact():
    images = {a["image"] for a in SKAFFOLD["build"]["artifacts"]}
    services = {f"flywheel/{p.parent.name}" for p in (ROOT / "services").glob("*/Dockerfile")}
    assert services == images


@pytest.mark.parametrize("profile", [p["name"] for p in SKAFFOLD["profiles"]])
def test_profile_values_render_through_the_chart(tools, profile):  # noqa: F811
    [spec] = [p for p in SKAFFOLD["profiles"] if p["name"] == profile]
    config = apply_patches(SKAFFOLD, spec.get("patches", []))
    documents = tools.render(extra=tuple(helm_sets(config)))
    kinds = {d["kind"] for d in documents}
    if profile == "kserve":
        assert "InferenceService" in kinds
    else:
        predictor = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("predictor"))
        limits = predictor["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {})
        assert ("nvidia.com/gpu" in limits) == (profile == "gpu")
