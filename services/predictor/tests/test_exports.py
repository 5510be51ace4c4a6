"""The public surface is exactly what is meant to be public."""

from __future__ import annotations

import flywheel_predictor


def test_all_is_sorted_and_pinned() -> None:
    assert flywheel_predictor.__all__ == sorted(flywheel_predictor.__all__)
    assert flywheel_predictor.__all__ == [
        "ConfigError",
        "FastPath",
        "FlywheelModelServer",
        "InferenceFailed",
        "InvalidRequest",
        "MethodNotAllowed",
        "ModelLoadError",
        "ModelNotServed",
        "OnnxModel",
        "PayloadTooLarge",
        "PredictorError",
        "ProviderChoice",
        "Settings",
        "TensorSpec",
        "UnsupportedMediaType",
        "VariantChoice",
        "VersionNotServed",
        "VersionSet",
        "VersionUnavailable",
        "choose_providers",
        "choose_variant",
        "load_settings",
        "parse_v1",
        "parse_v2",
        "serve",
    ]


def test_every_exported_name_resolves() -> None:
    for name in flywheel_predictor.__all__:
        assert getattr(flywheel_predictor, name) is not None
