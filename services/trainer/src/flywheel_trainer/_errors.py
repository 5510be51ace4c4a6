"""The trainer's one exception family.

    TrainerError
    ├── ConfigError         a setting or argument is invalid (exit code 2)
    ├── DataError           the data or feature repository cannot give a usable training set
    ├── ExportError         the fp32 ONNX graph does not reproduce the torch model
    ├── PublishError        the model repository refused the new version
    ├── CandidateRejected   the version was published, marked rejected by its gates (exit code 6)
    └── DriftError          the skew check cannot reach the drift service, or it refuses (exit code 1, as
                            TrainerError: a failed run, not a finding)

The trainer is a batch job, not a server, so the family maps to process exit codes (`EXIT_CODES`)
instead of HTTP statuses; the message of each error says what to do. `TrainerError` is rooted in
flywheel_contracts.errors' `FlywheelError` like every service's family (its HTTP status, unused here, is 500).
"""

from __future__ import annotations

from flywheel_contracts.errors import FlywheelError


class TrainerError(FlywheelError):
    """Base of every error the trainer raises on purpose."""


class ConfigError(TrainerError):
    """A setting or command-line argument has an invalid value."""


class DataError(TrainerError):
    """The data directory or feature repository cannot produce a usable training set."""


class ExportError(TrainerError):
    """The exported fp32 graph disagrees with the torch model beyond the parity tolerance."""


class PublishError(TrainerError):
    """The model repository could not take the new version."""


class CandidateRejected(TrainerError):
    """The candidate failed a gate against the stable version: it was published as rejected (so a person can read
    why in its metadata.json `gates` and MODEL_CARD.md) and must never be rolled out."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class DriftError(TrainerError):
    """The drift service (the skew check's sample and result endpoints) could not be reached, refused the request
    or answered something that is not the skew contract; the message names the URL and the status."""


EXIT_CODES: dict[type[TrainerError], int] = {
    ConfigError: 2,
    DataError: 3,
    ExportError: 4,
    PublishError: 5,
    CandidateRejected: 6,
    TrainerError: 1,
}


def exit_code(error: TrainerError) -> int:
    """The process exit code for `error`: its most specific class in `EXIT_CODES`."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1
