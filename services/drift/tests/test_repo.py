"""Which version the drift service attributes events to: `assume_version=latest` means what
`model_repo.resolve` means by "latest", the highest version not published as rejected by its gates."""

from flywheel_drift._repo import ReferenceLoader

from conftest import Harness, make_settings, publish_version, synthetic_probabilities, synthetic_rows

REJECTED = {"status": "rejected", "passed": False, "stable_version": "v1", "checks": [
    {"name": "pr_auc_gain", "passed": False, "value": -0.02, "threshold": 0.0, "reason": "CI lower bound -0.02 <= 0.0"}]}


def test_latest_skips_a_version_published_as_rejected_by_its_gates(tmp_path):
    publish_version(tmp_path / "repo")
    publish_version(tmp_path / "repo", seed=1, gates=REJECTED)
    loader = ReferenceLoader(make_settings(tmp_path))
    assert loader.published("fraud") == ["v1", "v2"]
    assert loader.latest("fraud") == "v1"
    assert loader.resolve("fraud", None) == "v1"
    assert loader.resolve("fraud", "v2") == "v2"  # named, a rejected version is still analysed against itself


def test_with_every_version_rejected_there_is_no_latest(tmp_path):
    publish_version(tmp_path / "repo", gates=REJECTED)
    assert ReferenceLoader(make_settings(tmp_path)).resolve("fraud", None) is None


def test_events_naming_no_version_go_to_the_latest_version_not_rejected(tmp_path):
    publish_version(tmp_path / "repo")
    publish_version(tmp_path / "repo", seed=1, gates=REJECTED)
    h = Harness(make_settings(tmp_path))
    try:
        assert list(h.client.get("/ready").json()["references"]) == ["fraud/v1"]
        assert h.batch(synthetic_rows(200, 5), synthetic_probabilities(200, 5)).status_code == 202
        h.sync()
        assert [v["version"] for v in h.client.get("/v1/report").json()["versions"]] == ["v1"]
    finally:
        h.close()
