"""Settings: defaults that are safe, and a bad value named at start-up."""

from __future__ import annotations

import pytest

from flywheel_router import ConfigError, Settings, load_settings


def test_defaults_route_from_a_file_to_the_local_transformer_with_the_admin_api_closed() -> None:
    s = Settings()
    assert (s.http_port, s.admin_port, s.route_source, s.token_file) == (8000, 8001, "file", None)
    assert s.default_upstream == "http://127.0.0.1:8090"


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("FLYWHEEL_ROUTER_HTTP_PORT", "0", "greater than or equal to 1"),
        ("FLYWHEEL_ROUTER_ROUTE_SOURCE", "etcd", "'file' or 'configmap'"),
        ("FLYWHEEL_ROUTER_DEFAULT_UPSTREAM", "transformer:8090", "pattern"),
        ("FLYWHEEL_ROUTER_ROUTE_POLL_INTERVAL_S", "5", "less than or equal to 1"),
        ("FLYWHEEL_ROUTER_SHADOW_QUEUE_SIZE", "0", "greater than or equal to 1"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch, env: str, value: str, expected: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=f"Config '{env}' has value '{value}': expected .*{expected}"):
        load_settings()
