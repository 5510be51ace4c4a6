import pytest

from flywheel_transformer import ConfigError, load_settings


def test_defaults_match_the_documented_ports_and_policy(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("FLYWHEEL_TRANSFORMER_"):
            monkeypatch.delenv(key)
    settings = load_settings()
    assert settings.http_port == 8090
    assert settings.model_name == "fraud"
    assert settings.predictor_base == "http://127.0.0.1:8080"
    assert settings.features_base == "http://127.0.0.1:6566"
    assert settings.model_version == "latest"
    assert settings.threshold == 0.5
    assert settings.features_fallback == "error"
    assert settings.event_sink_url == ""
    assert settings.max_body_bytes == 1_048_576
    assert settings.debug_features is False
    assert settings.event_drain_timeout_s == 5.0
    assert (settings.max_amount, settings.max_future_skew_s, settings.max_event_age_s) == (1e7, 300.0, 366 * 86400.0)
    assert settings.unseen_amount_margin == 0.1
    assert settings.debug_token_file is settings.features_token_file is settings.event_token_file is None


def test_settings_are_read_from_prefixed_environment_variables(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_TRANSFORMER_THRESHOLD", "0.8")
    monkeypatch.setenv("FLYWHEEL_TRANSFORMER_FEATURES_FALLBACK", "defaults")
    monkeypatch.setenv("FLYWHEEL_TRANSFORMER_EVENT_SINK_URL", "http://127.0.0.1:9000/")
    settings = load_settings()
    assert settings.threshold == 0.8
    assert settings.features_fallback == "defaults"
    assert settings.event_sink_url == "http://127.0.0.1:9000/"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("THRESHOLD", "1.5", "less than or equal to 1"),
        ("FEATURES_FALLBACK", "maybe", "'error' or 'defaults'"),
        ("HTTP_PORT", "eighty", "valid integer"),
        ("EVENT_SINK_URL", "sink:9000", "http:// or https:// URL"),
        ("MODEL_VERSION", "newest", "latest"),
        ("FEATURES_TIMEOUT_S", "0", "greater than 0"),
        ("MAX_BODY_BYTES", "100", "greater than or equal to 1024"),
        ("DEBUG_FEATURES", "maybe", "valid boolean"),
        ("EVENT_DRAIN_TIMEOUT_S", "0", "greater than 0"),
        ("MAX_AMOUNT", "1e300", "less than or equal to 1000000000000"),
        ("MAX_AMOUNT", "0", "greater than 0"),
        ("MAX_FUTURE_SKEW_S", "-1", "greater than or equal to 0"),
        ("MAX_EVENT_AGE_S", "0", "greater than 0"),
        ("UNSEEN_AMOUNT_MARGIN", "-0.5", "greater than or equal to 0"),
    ],
)
def test_a_bad_value_fails_naming_the_variable_and_the_value(monkeypatch, variable, value, expected):
    monkeypatch.setenv(f"FLYWHEEL_TRANSFORMER_{variable}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"Config 'FLYWHEEL_TRANSFORMER_{variable}' has value '{value}'" in message
    assert expected in message


def test_an_empty_token_file_setting_means_unset(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_TRANSFORMER_FEATURES_TOKEN_FILE", "")
    monkeypatch.setenv("FLYWHEEL_TRANSFORMER_EVENT_TOKEN_FILE", "/run/secrets/drift-ingest")
    settings = load_settings()
    assert settings.features_token_file is None
    assert str(settings.event_token_file) == "/run/secrets/drift-ingest"


def test_every_setting_is_documented_in_the_readme():
    from pathlib import Path

    from flywheel_transformer import Settings

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in readme, name


def test_the_default_shutdown_fits_in_the_charts_termination_grace_period(monkeypatch):
    """SIGTERM -> in-flight requests finish (features + predictor timeouts) -> the event drain; Kubernetes kills
    the pod terminationGracePeriodSeconds after SIGTERM (30 s unless the chart sets it)."""
    import re
    from pathlib import Path

    for key in list(__import__("os").environ):
        if key.startswith("FLYWHEEL_TRANSFORMER_"):
            monkeypatch.delenv(key)
    chart = Path(__file__).parents[3] / "charts" / "flywheel" / "templates" / "transformer-deployment.yaml"
    assert chart.exists(), f"{chart} moved: point this test at the transformer's Deployment template"
    found = re.search(r"terminationGracePeriodSeconds:\s*(\d+)", chart.read_text())
    grace_s = int(found.group(1)) if found else 30
    settings = load_settings()
    assert settings.features_timeout_s + settings.predictor_timeout_s + settings.event_drain_timeout_s < grace_s
