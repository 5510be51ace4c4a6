import pytest
from pydantic import ValidationError

from flywheel_trainer import ConfigError, load_settings
from flywheel_trainer._errors import EXIT_CODES, DataError, TrainerError, exit_code


def test_defaults_load_and_are_frozen():
    settings = load_settings()
    assert settings.epochs >= 1 and settings.parity_atol == 1e-5
    with pytest.raises(ValidationError, match="frozen"):
        settings.epochs = 3


def test_bad_environment_value_names_the_setting(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_TRAINER_EPOCHS", "many")
    with pytest.raises(ConfigError, match="Config 'FLYWHEEL_TRAINER_EPOCHS' has value 'many'"):
        load_settings()


def test_out_of_range_value_is_refused(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_TRAINER_GATE_MAX_AUC_DIFF", "0")
    with pytest.raises(ConfigError, match="FLYWHEEL_TRAINER_GATE_MAX_AUC_DIFF"):
        load_settings()


def test_splits_that_leave_no_training_rows_are_refused():
    with pytest.raises(ConfigError, match="20% of rows for training"):
        load_settings(validation_fraction=0.45, test_fraction=0.45)


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="FLYWHEEL_TRAINER_EPOCS"):
        load_settings(epocs=3)


def test_every_error_maps_to_a_distinct_nonzero_exit_code():
    assert exit_code(DataError("x")) == EXIT_CODES[DataError]
    assert exit_code(TrainerError("x")) == 1
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES) and 0 not in EXIT_CODES.values()
