import flywheel_drift


def test_all_is_exactly_the_public_surface_and_sorted():
    assert flywheel_drift.__all__ == sorted(flywheel_drift.__all__)
    assert flywheel_drift.__all__ == [
        "Alert", "Backlogged", "Category", "ConfigError", "Detector", "DriftError", "DriftService", "InvalidEvent",
        "NotReady", "ReferenceUnavailable", "Report", "RequestError", "Settings", "UnknownModel", "Verdict",
        "VersionReport", "compute_state", "create_app", "load_settings", "write_state",
    ]
    for name in flywheel_drift.__all__:
        assert hasattr(flywheel_drift, name)
