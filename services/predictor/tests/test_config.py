"""Settings: defaults, environment variables, and bad values that fail naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from flywheel_predictor import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FLYWHEEL_PREDICTOR_"):
            monkeypatch.delenv(key)


def test_defaults_match_the_contract() -> None:
    settings = load_settings()
    assert settings.model_repo == Path("model_repo")
    assert (settings.model_name, settings.model_version, settings.variant, settings.providers) == ("fraud", "latest", "auto", "auto")
    assert (settings.http_port, settings.workers, settings.intra_op_threads) == (8080, 1, 1)
    assert settings.provider_list is None
    assert (settings.versions, settings.listed_versions, settings.load_all) == ("default", (), False)
    assert (settings.repo_poll_interval_s, settings.unload_idle_s, settings.max_loaded_versions, settings.load_retry_s) == (5.0, 600.0, 4, 30.0)


@pytest.mark.parametrize(
    ("value", "listed", "load_all"),
    [("default", (), False), ("all", (), True), (" v3, v2 ,v3", ("v3", "v2"), False)],
)
def test_versions_is_default_all_or_a_list(monkeypatch: pytest.MonkeyPatch, value: str, listed: tuple, load_all: bool) -> None:
    monkeypatch.setenv("FLYWHEEL_PREDICTOR_VERSIONS", value)
    settings = load_settings()
    assert (settings.listed_versions, settings.load_all) == (listed, load_all)


def test_settings_come_from_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_PREDICTOR_MODEL_VERSION", "v12")
    monkeypatch.setenv("FLYWHEEL_PREDICTOR_PROVIDERS", " CUDAExecutionProvider , CPUExecutionProvider")
    monkeypatch.setenv("FLYWHEEL_PREDICTOR_WORKERS", "2")
    settings = load_settings()
    assert settings.model_version == "v12"
    assert settings.provider_list == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert settings.workers == 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MODEL_VERSION", "3"),
        ("VARIANT", "fp64"),
        ("WORKERS", "0"),
        ("HTTP_PORT", "70000"),
        ("INTRA_OP_THREADS", "many"),
        ("PROVIDERS", "auto,CPUExecutionProvider"),
        ("MODEL_NAME", "../etc"),
        ("VERSIONS", "latest"),
        ("VERSIONS", "v1,,v2"),
        ("VERSIONS", "2"),
        ("VERSIONS", "all,v2"),
        ("REPO_POLL_INTERVAL_S", "0"),
        ("UNLOAD_IDLE_S", "-1"),
        ("MAX_LOADED_VERSIONS", "0"),
        ("LOAD_RETRY_S", "soon"),
    ],
)
def test_bad_value_fails_naming_the_variable_and_value(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(f"FLYWHEEL_PREDICTOR_{variable}", value)
    with pytest.raises(ConfigError, match=f"Config 'FLYWHEEL_PREDICTOR_{variable}' has value '{value}'"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"VERSIONS": "all", "MAX_LOADED_VERSIONS": "1"}, "at least 2 with VERSIONS=all"),
        ({"MODEL_VERSION": "v1", "VERSIONS": "v2,v3", "MAX_LOADED_VERSIONS": "2"}, "at least 3"),
        ({"VERSIONS": "v2,v3,v4", "MAX_LOADED_VERSIONS": "2"}, "at least 3"),
    ],
)
def test_max_loaded_versions_must_hold_the_pinned_versions(monkeypatch: pytest.MonkeyPatch, env: dict, words: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"FLYWHEEL_PREDICTOR_{key}", value)
    with pytest.raises(ConfigError, match=f"Config 'FLYWHEEL_PREDICTOR_MAX_LOADED_VERSIONS' has value '{env['MAX_LOADED_VERSIONS']}'") as refused:
        load_settings()
    assert words in str(refused.value)


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 20, name


def test_the_readme_lists_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"| `{name.upper()}` |" in readme or f"`{name.upper()}` /" in readme or f"/ `{name.upper()}`" in readme, name


def test_admission_defaults_are_on_and_a_bad_value_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.max_in_flight, settings.max_waiting, settings.max_wait_ms, settings.retry_after_s) == (16, 16, 10.0, 1)
    monkeypatch.setenv("FLYWHEEL_PREDICTOR_SHED_EXEMPT_PATHS", "metrics")
    with pytest.raises(ConfigError, match="Config 'FLYWHEEL_PREDICTOR_SHED_EXEMPT_PATHS' has value 'metrics'"):
        load_settings()
