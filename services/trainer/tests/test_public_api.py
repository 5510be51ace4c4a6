import flywheel_trainer


def test_all_lists_exactly_the_public_names():
    assert flywheel_trainer.__all__ == [
        "CandidateRejected",
        "ConfigError",
        "DataError",
        "DriftError",
        "ExportError",
        "GateThresholds",
        "PublishError",
        "TrainerError",
        "TrainerSettings",
        "TrainingSet",
        "build_training_set",
        "gate",
        "load_settings",
        "main",
        "skew",
        "train",
        "train_and_publish",
    ]
    assert flywheel_trainer.__all__ == sorted(flywheel_trainer.__all__)
    for name in flywheel_trainer.__all__:
        assert getattr(flywheel_trainer, name) is not None
