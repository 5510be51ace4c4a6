from pathlib import Path

import pytest

from flywheel_features import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[3] / "feature_repo"


def test_defaults_are_the_documented_ones(monkeypatch):
    for name in ("FLYWHEEL_DATA_DIR", "FLYWHEEL_FEATURES_PORT", "FLYWHEEL_FEATURES_HOST"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.port, settings.host, settings.workers) == (6566, "0.0.0.0", 1)
    assert settings.store_yaml == "feature_store.yaml" and settings.feature_service == "fraud_v1"
    assert settings.data_dir == Path("data")


def test_the_shared_data_dir_variable_is_honoured(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path))
    assert Settings().data_dir == tmp_path


def test_a_bad_port_fails_at_start_naming_the_variable(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_FEATURES_REPO_PATH", str(REPO))
    monkeypatch.setenv("FLYWHEEL_FEATURES_PORT", "http")
    with pytest.raises(ConfigError, match="Config 'FLYWHEEL_FEATURES_PORT' has value 'http'"):
        load_settings()


def test_an_unknown_environment_file_fails_at_start_naming_the_variable(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_FEATURES_REPO_PATH", str(REPO))
    monkeypatch.setenv("FLYWHEEL_FEATURES_STORE_YAML", "feature_store.staging.yaml")
    with pytest.raises(ConfigError, match="FLYWHEEL_FEATURES_STORE_YAML"):
        load_settings()


def test_both_environments_exist_in_the_feature_repo(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_FEATURES_REPO_PATH", str(REPO))
    for name in ("feature_store.yaml", "feature_store.cluster.yaml"):
        monkeypatch.setenv("FLYWHEEL_FEATURES_STORE_YAML", name)
        assert load_settings().store_yaml_path.is_file()
