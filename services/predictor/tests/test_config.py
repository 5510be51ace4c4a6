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
    ],
)
def test_bad_value_fails_naming_the_variable_and_value(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(f"FLYWHEEL_PREDICTOR_{variable}", value)
    with pytest.raises(ConfigError, match=f"Config 'FLYWHEEL_PREDICTOR_{variable}' has value '{value}'"):
        load_settings()


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 20, name
