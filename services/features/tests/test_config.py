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


def test_the_guard_settings_default_to_closed_routes_and_a_1_mib_body(monkeypatch):
    for name in ("READ_TOKEN_FILE", "WRITE_TOKEN_FILE", "MAX_BODY_BYTES"):
        monkeypatch.delenv(f"FLYWHEEL_FEATURES_{name}", raising=False)
    settings = Settings()
    assert (settings.read_token_file, settings.write_token_file, settings.max_body_bytes) == (None, None, 1_048_576)


def test_the_guard_settings_come_from_their_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_FEATURES_READ_TOKEN_FILE", str(tmp_path / "features-read"))
    monkeypatch.setenv("FLYWHEEL_FEATURES_WRITE_TOKEN_FILE", str(tmp_path / "features-write"))
    monkeypatch.setenv("FLYWHEEL_FEATURES_MAX_BODY_BYTES", "65536")
    settings = Settings()
    assert settings.read_token_file == tmp_path / "features-read"
    assert settings.write_token_file == tmp_path / "features-write"
    assert settings.max_body_bytes == 65536


def test_an_empty_token_file_variable_means_unset(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_FEATURES_READ_TOKEN_FILE", "")
    assert Settings().read_token_file is None


def test_one_file_for_both_tokens_fails_at_start(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_FEATURES_REPO_PATH", str(REPO))
    monkeypatch.setenv("FLYWHEEL_FEATURES_READ_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("FLYWHEEL_FEATURES_WRITE_TOKEN_FILE", str(tmp_path / "token"))
    with pytest.raises(ConfigError, match="READ_TOKEN_FILE and WRITE_TOKEN_FILE are both"):
        load_settings()


def test_a_body_limit_below_1_kib_fails_at_start_naming_the_variable(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_FEATURES_REPO_PATH", str(REPO))
    monkeypatch.setenv("FLYWHEEL_FEATURES_MAX_BODY_BYTES", "10")
    with pytest.raises(ConfigError, match="Config 'FLYWHEEL_FEATURES_MAX_BODY_BYTES' has value '10'"):
        load_settings()


def test_the_readme_documents_every_setting():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`FLYWHEEL_FEATURES_{name.upper()}`" in readme, name
