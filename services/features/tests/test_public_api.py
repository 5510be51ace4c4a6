import flywheel_features


def test_public_names_are_exactly_these():
    assert flywheel_features.__all__ == [
        "ConfigError",
        "FeaturesError",
        "NotReady",
        "Settings",
        "StoreError",
        "apply",
        "check_ready",
        "create_app",
        "historical",
        "history_end",
        "load_settings",
        "materialize",
        "open_store",
        "serve",
    ]
    assert flywheel_features.__all__ == sorted(flywheel_features.__all__)
