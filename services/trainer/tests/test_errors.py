"""The trainer's errors are rooted in the shared family and keep their exit codes."""

from __future__ import annotations

from flywheel_contracts.errors import FlywheelError
from flywheel_trainer import (
    ConfigError,
    DataError,
    ExportError,
    PublishError,
    TrainerError,
)
from flywheel_trainer._errors import CandidateRejected, exit_code


def test_the_trainer_family_is_rooted_in_flywheel_contracts_and_keeps_its_exit_codes():
    assert issubclass(TrainerError, FlywheelError)
    codes = [exit_code(cls("x")) for cls in (ConfigError, DataError, ExportError, PublishError, TrainerError)]
    assert codes == [2, 3, 4, 5, 1]
    assert exit_code(CandidateRejected("published as rejected")) == 6
