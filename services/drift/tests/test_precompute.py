"""Drift state shipped with a version: written by `precompute` before publishing, verified, used."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel_core import model_repo
from flywheel_drift import ReferenceUnavailable
from flywheel_drift._repo import ReferenceLoader
from flywheel_drift._state import STATE_DIR, STATE_FILE, read_state

from conftest import Harness, make_settings, publish_version


def test_precompute_cli_writes_state_into_a_staging_dir_that_publish_then_covers(tmp_path):
    repo = tmp_path / "repo"
    source = publish_version(repo)
    staging = model_repo.staging_path(repo, "fraud")
    (staging / "drift_reference.parquet").write_bytes((source / "drift_reference.parquet").read_bytes())
    env = {**os.environ, "FLYWHEEL_DRIFT_ONLINE_ERT": "300",
           "FLYWHEEL_DRIFT_ONLINE_FEATURES": "amount_log,txn_count_1h"}
    done = subprocess.run([sys.executable, "-m", "flywheel_drift", "precompute", "--version-dir", str(staging),
                           "--streams", "300"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "online h=" in done.stdout and "(simulation)" in done.stdout
    state = json.loads((staging / STATE_DIR / STATE_FILE).read_text())
    assert state["online"]["method"] == "simulation"
    assert 240 < state["online"]["simulated_ert"] < 360
    metadata = json.loads((source / "metadata.json").read_text())
    published = model_repo.publish(staging, repo, "fraud", {k: metadata[k] for k in ("input", "output", "metrics")})
    assert f"{STATE_DIR}/{STATE_FILE}" in json.loads((published / "metadata.json").read_text())["files"]


def test_the_service_uses_shipped_state_made_for_its_configuration(tmp_path):
    publish_version(tmp_path / "repo", state=True)
    loader = ReferenceLoader(make_settings(tmp_path, online_ert=300, online_features="amount_log,txn_count_1h"))
    online = loader.load("fraud", "v1").state["online"]
    assert online["source"] == "drift_state" and online["method"] == "simulation"


def test_state_for_another_configuration_falls_back_to_the_approximation_and_says_so(tmp_path):
    publish_version(tmp_path / "repo", state=True)
    h = Harness(make_settings(tmp_path))  # default ERT and features differ from the shipped state
    try:
        assert "another ERT" in h.client.get("/ready").json()["references"]["fraud/v1"]
    finally:
        h.close()


def test_state_computed_for_another_reference_is_refused(tmp_path):
    publish_version(tmp_path / "repo", state=True)
    path = tmp_path / "repo" / "fraud" / "v1"
    with pytest.raises(ReferenceUnavailable, match="another drift_reference.parquet"):
        read_state(path, "0" * 64)


def test_a_modified_published_version_is_refused(tmp_path):
    publish_version(tmp_path / "repo")
    parquet = Path(tmp_path / "repo" / "fraud" / "v1" / "drift_reference.parquet")
    parquet.write_bytes(parquet.read_bytes() + b"x")
    with pytest.raises(ReferenceUnavailable, match="sha256"):
        ReferenceLoader(make_settings(tmp_path)).load("fraud", "v1")
