"""skaffold.yaml checked by the skaffold binary itself (built from its pinned Go module by hack/cluster): the
config parses under every profile, a misspelt field is refused by name, and each profile renders through
the chart into manifests the API server accepts in a restricted namespace. Building images is out of reach
(no container engine here), so renders use a fixed tag and no registry lookups."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from chart_fixtures import pod_spec, tool
from conftest import REPO

SKAFFOLD = yaml.safe_load((REPO / "skaffold.yaml").read_text())
PROFILES = [p["name"] for p in SKAFFOLD["profiles"]]
TAG = "t1"


@pytest.fixture(scope="module")
def skaffold(cluster, tools, tmp_path_factory):  # noqa: F811
    """Runs skaffold from the repository root with helm on PATH and its config and metrics kept private."""
    binary = tool(cluster, "skaffold")
    home = tmp_path_factory.mktemp("skaffold-home")
    env = {**tools.env, "HOME": str(home), "SKAFFOLD_UPDATE_CHECK": "false",
           "PATH": f"{Path(tools.helm_bin).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(*argv: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([binary, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        if ok:
            assert done.returncode == 0, f"skaffold {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
        return done

    return run


def test_every_artifact_has_its_dockerfile():
    for artifact in SKAFFOLD["build"]["artifacts"]:
        assert (REPO / artifact["context"] / artifact["docker"]["dockerfile"]).is_file(), artifact["image"]


def test_every_service_has_an_artifact_and_a_chart_image_value():
    images = {a["image"] for a in SKAFFOLD["build"]["artifacts"]}
    services = {p.parent.name for p in (REPO / "services").glob("*/Dockerfile")}
    assert images == {f"flywheel/{s}" for s in services}
    templates = SKAFFOLD["manifests"]["helm"]["releases"][0]["setValueTemplates"]
    for service in services:
        assert templates[f"{service}.image.repository"] == f"{{{{.IMAGE_REPO_flywheel_{service}}}}}"


@pytest.mark.parametrize("profile", PROFILES)
def test_config_parses_under_the_profile(skaffold, profile):
    parsed = yaml.safe_load(skaffold("diagnose", "--yaml-only", "-p", profile).stdout)
    assert parsed["apiVersion"] == SKAFFOLD["apiVersion"], "skaffold.yaml is not on the binary's newest schema"


def test_a_misspelt_field_is_refused_by_name(skaffold, tmp_path):
    bad = (REPO / "skaffold.yaml").read_text().replace("dockerfile: services/drift/Dockerfile",
                                                        "dockerfil: services/drift/Dockerfile")
    (tmp_path / "skaffold.yaml").write_text(bad)
    done = skaffold("diagnose", "--yaml-only", "-f", str(tmp_path / "skaffold.yaml"), ok=False)
    assert done.returncode != 0 and "field dockerfil not found" in done.stderr, done.stderr


def _render(skaffold, profile: str) -> list[dict]:
    out = skaffold("render", "-p", profile, "--digest-source=tag", "--tag", TAG, "--offline=true").stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] == "InferenceService":
        return [c for part in ("predictor", "transformer") for c in doc["spec"][part].get("containers", [])]
    return pod_spec(doc).get("containers", [])


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_renders_manifests_the_api_server_accepts(skaffold, tools, third_party_crds,  # noqa: F811
                                                          restricted_namespace, profile):
    docs = _render(skaffold, profile)
    kinds = {d["kind"] for d in docs}
    assert "CustomResourceDefinition" in kinds and "Pod" not in kinds  # CRDs in, the helm test pod out
    assert ("InferenceService" in kinds) == (profile == "kserve")
    images = {c["image"] for d in docs for c in _containers(d) if c["image"].startswith("flywheel/")}
    expected = {"features", "trainer", "predictor", "transformer", "drift", "router", "controller"}
    assert images == {f"flywheel/{s}:{TAG}" for s in expected}, "every service runs the image skaffold built"
    predictors = [c for d in docs for c in _containers(d) if c["image"].startswith("flywheel/predictor")]
    assert {("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})) for c in predictors} == {profile == "gpu"}
    manifest = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    tools.kubectl("apply", "--dry-run=server", "-n", restricted_namespace, "-f", "-", stdin=manifest)
