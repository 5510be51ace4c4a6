import flywheel_transformer


def test_public_names_are_exactly_the_documented_surface():
    assert flywheel_transformer.__all__ == [
        "ConfigError",
        "DEBUG_FEATURES_HEADER",
        "DECISIONS_HEADER",
        "FraudTransformer",
        "INFERENCE_ID_HEADER",
        "MODEL_VERSION_HEADER",
        "ModelMetadataError",
        "RequestError",
        "SCORES_HEADER",
        "Settings",
        "TransformerError",
        "load_settings",
        "main",
        "serve",
    ]


def test_all_is_sorted_and_every_name_resolves():
    assert flywheel_transformer.__all__ == sorted(flywheel_transformer.__all__)
    for name in flywheel_transformer.__all__:
        assert getattr(flywheel_transformer, name) is not None
