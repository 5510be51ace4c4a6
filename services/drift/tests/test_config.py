import pytest

from flywheel_drift import ConfigError, load_settings


def test_defaults_listen_on_8070_and_skip_ids_and_clock_features():
    s = load_settings()
    assert s.http_port == 8070
    assert s.models == ("fraud",)
    assert {"card_id", "merchant_id", "hour_sin", "hour_cos", "is_night"} <= set(s.skip_features)
    assert "probability" not in s.online_features  # the model's score follows the clock


def test_lists_are_comma_separated_in_the_environment(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DRIFT_MODELS", "fraud, churn")
    monkeypatch.setenv("FLYWHEEL_DRIFT_ALERT_WEBHOOK_SINKS", "http://a:1/x,http://b:2/y")
    s = load_settings()
    assert s.models == ("fraud", "churn")
    assert s.alert_webhook_sinks == ("http://a:1/x", "http://b:2/y")


def test_a_bad_value_fails_naming_the_variable(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DRIFT_ALPHA", "2")
    with pytest.raises(ConfigError, match="FLYWHEEL_DRIFT_ALPHA' has value '2'"):
        load_settings()


def test_a_sink_that_is_not_a_url_is_refused():
    with pytest.raises(ConfigError, match="ALERT_CLOUDEVENT_SINKS"):
        load_settings(alert_cloudevent_sinks="controller:8080")


def test_min_window_rows_above_window_rows_is_refused():
    with pytest.raises(ConfigError, match="MIN_WINDOW_ROWS"):
        load_settings(window_rows=100, min_window_rows=200)


def test_token_files_are_unset_by_default_so_the_writing_routes_are_closed():
    s = load_settings()
    assert s.ingest_token_file is None and s.labels_token_file is None


def test_one_file_for_both_credentials_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_DRIFT_INGEST_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("FLYWHEEL_DRIFT_LABELS_TOKEN_FILE", str(tmp_path / "token"))
    with pytest.raises(ConfigError, match="INGEST_TOKEN_FILE and LABELS_TOKEN_FILE"):
        load_settings()
